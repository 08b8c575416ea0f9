#!/usr/bin/env bash
# Builds the libFuzzer targets of Fuzz/ (debug, i.e. with every check -Ounchecked removes, plus
# AddressSanitizer) and runs each for SECONDS (default 60), FUZZ_JOBS at a time (default 2).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Seed corpora are made from Tests/Fixtures at run time; each target's corpus grows in
# $FUZZ_WORK/corpus/TARGET (default .build-fuzz/work), so a later run continues from it.
# Prints per target: executions, exec/s, coverage (libFuzzer's cov: and ft:), corpus size, and
# crashes. Crash, leak, timeout and out-of-memory inputs are left in $FUZZ_WORK/crashes (named
# TARGET-crash-…, TARGET-timeout-…, …); the script exits 1 when there is any, or any sanitizer report.
# Reproduce one with: PANORAMA_FUZZ_TARGET=TARGET .build-fuzz/debug/panorama-fuzz FILE
# FUZZ_BINARY=PATH: use that build instead of building.
# FUZZ_KEEP_GOING=1: libFuzzer's fork mode, which goes on after a crash (for long campaigns).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-60}
shift || true
all=(tensors checkpoint adapters image configs presets prompt tokenizer-files infotext request)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
jobs=${FUZZ_JOBS:-2}
build=${FUZZ_BUILD_PATH:-$root/.build-fuzz}
work=${FUZZ_WORK:-$build/work}
export PATH="/opt/swift/usr/bin:$PATH"

# -Xswiftc -sanitize=fuzzer,address: SwiftPM passes the two sanitizers as two -sanitize flags, of
# which swiftc keeps the last, so without it the Swift code would get no coverage counters.
# -wmo (with per-file objects): swiftc 6.3 outside whole-module mode reports a false "circular
# reference" in Weights (JSON.swift), as in any debug build of the package.
if [ -n "${FUZZ_BINARY:-}" ]; then
  binary=$FUZZ_BINARY  # an already built binary (a copy, so that rebuilding does not change a running campaign)
else
  echo "== building the fuzz targets (debug + fuzzer + address sanitizer) in $build"
  start=$(date +%s)
  if ! swift build --package-path Fuzz --build-path "$build" --product panorama-fuzz \
      --sanitize=fuzzer --sanitize=address -Xswiftc -sanitize=fuzzer,address \
      -Xswiftc -wmo -Xswiftc -num-threads -Xswiftc 2 --disable-index-store 2>&1 \
      | grep -Ev "^warning: |^remark: |CMakeLists|ld.gold: warning|^\s*$"; then :; fi
  binary="$build/debug/panorama-fuzz"
  [ -x "$binary" ] && [ "$binary" -nt Fuzz/Package.swift ] || { echo "fuzz build failed"; exit 2; }
  echo "== built in $(( $(date +%s) - start )) s"
fi

fixtures=Tests/Fixtures
mkdir -p "$work/crashes" "$work/logs"

# seed DIR FILE... : copies the files (the small ones) into DIR.
seed() { local dir=$1; shift; mkdir -p "$dir"; for f in "$@"; do
  [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 131072 ] && cp "$f" "$dir/$(echo "$f" | tr / _)"; done; }
# prefixed DIR BYTE FILE... : copies the files with a selector byte (0-255) in front.
prefixed() { local dir=$1 byte=$2; shift 2; mkdir -p "$dir"; for f in "$@"; do
  [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 131072 ] && { printf "\\x$(printf %02x "$byte")"; cat "$f"; } > "$dir/$byte-$(echo "$f" | tr / _)"; done; }
# text DIR NAME TEXT : a seed from a string.
text() { mkdir -p "$1"; printf '%s' "$3" > "$1/$2"; }

make_seeds() {
  local t=$1 d=$work/seeds/$1
  rm -rf "$d"; mkdir -p "$d"
  case $t in
    tensors) seed "$d" $fixtures/pickle/*.pt $fixtures/pickle/*.safetensors $fixtures/lora/*.pt \
               $fixtures/golden/prompts/embeddings*/*.safetensors $fixtures/infotext/*.safetensors ;;
    checkpoint) seed "$d" $fixtures/models/single-file/*-shapes.json ;;
    adapters) prefixed "$d" 0 $fixtures/golden/prompts/embeddings*/*.safetensors $fixtures/infotext/*.safetensors \
                $fixtures/lora/peft-attn.safetensors
              prefixed "$d" 1 $fixtures/pickle/embedding*.pt $fixtures/lora/kohya-te.pt ;;
    image) seed "$d" $fixtures/images/*.png $fixtures/images/input/*.* $fixtures/infotext/*.png ;;
    configs) local m=$fixtures/models
             prefixed "$d" 0 $m/*/unet/config.json; prefixed "$d" 1 $m/*/vae/config.json
             prefixed "$d" 2 $m/tiny-taesd/*/config.json; prefixed "$d" 3 $m/*/text_encoder/config.json
             prefixed "$d" 4 $m/*/scheduler/scheduler_config.json; prefixed "$d" 6 $m/*/model_index.json ;;
    presets) seed "$d" presets/*.json ;;
    prompt) text "$d" a 'a (snowy:1.2) mountain [at dusk], ((very detailed)) BREAK sky <lora:x:0.5> emb'
            text "$d" b '(a:1.1)(b:0.9) \(escaped\) [[c]] AND d:2 <hypernet:h:1> neg, neg, 東京 🙂 !!!' ;;
    tokenizer-files)
      local sep; sep=$(printf '\001FILE\001')
      for f in $fixtures/tokenizer/tiny $fixtures/tokenizer/folders/* $fixtures/models/tiny-sd2/tokenizer; do
        { cat "$f/vocab.json" 2>/dev/null; printf '%s' "$sep"; cat "$f/merges.txt" 2>/dev/null; printf '%s' "$sep"
          cat "$f/tokenizer_config.json" 2>/dev/null; printf '%s' "$sep"; cat "$f/special_tokens_map.json" 2>/dev/null
        } > "$d/$(basename "$f")"
      done ;;
    infotext)
      if command -v python3 >/dev/null; then
        python3 - "$fixtures/infotext/cases.json" "$d" <<'PY'
import json, sys
for i, case in enumerate(json.load(open(sys.argv[1]))["cases"]):
    open(f"{sys.argv[2]}/case{i}", "w").write(case["text"])
PY
      fi
      text "$d" plain $'a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model: m' ;;
    request)
      text "$d" txt2img '{"prompt":"a (cat:1.2)","negative_prompt":"dog","steps":20,"cfg_scale":7,"width":768,"height":512,"seed":5,"sampler_name":"Euler a","scheduler":"karras","n_iter":2,"batch_size":1}'
      text "$d" pano '{"prompt":"hills","width":2048,"height":512,"panorama_circular":true,"panorama_stride":16,"panorama_window_weights":"gaussian:0.5","panorama_timestep_spacing":"trailing","panorama_spot":false}'
      text "$d" regions '{"prompt":"sky","width":1024,"height":512,"panorama_regions":[{"prompt":"a tree","rect":[0,0,0.5,1],"feather":8,"weight":1.5},{"prompt":"a house","mask":"iVBORw0KGgo=","negative_prompt":"x","guidance":5}],"panorama_bootstrap_steps":3,"panorama_few_step":"auto"}'
      text "$d" img2img '{"init_images":["iVBORw0KGgo="],"denoising_strength":0.6,"mask":"iVBORw0KGgo=","mask_blur":4,"inpainting_fill":1,"inpaint_full_res":false,"resize_mode":0,"prompt":"x","override_settings":{"sd_model_checkpoint":"m"}}' ;;
  esac
}

# run TARGET: fuzzes it for $seconds, writes its summary line to $work/logs/TARGET.summary.
run() {
  local t=$1 corpus=$work/corpus/$1 log=$work/logs/$1.log
  mkdir -p "$corpus"
  make_seeds "$t"
  local maxlen=$(( $(find "$work/seeds/$t" "$corpus" -type f -printf '%s\n' | sort -n | tail -1) + 0 ))
  [ "$maxlen" -lt 4096 ] && maxlen=4096
  local keep=()
  [ -n "${FUZZ_KEEP_GOING:-}" ] && keep=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  # Leaks are not reported: the ones seen are Foundation's own (Data(contentsOf:) on some inputs),
  # not the readers'. The Swift runtime's backtracer is off so that libFuzzer sees the trap.
  SWIFT_BACKTRACE=enable=no PANORAMA_ROOT=$root PANORAMA_FUZZ_TARGET=$t \
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=0} \
    "$binary" "$corpus" "$work/seeds/$t" "${keep[@]}" -max_total_time="$seconds" -timeout=${FUZZ_TIMEOUT:-10} \
    -rss_limit_mb=${FUZZ_RSS_MB:-3072} -malloc_limit_mb=${FUZZ_MALLOC_MB:-2048} -max_len="$maxlen" \
    -print_final_stats=1 -artifact_prefix="$work/crashes/$t-" > "$log" 2>&1
  local status=$?
  local done_line execs rate cov ft corp crashes reports
  done_line=$(grep -E "^#[0-9]+:?[[:space:]]+(DONE|INITED|NEW|REDUCE|pulse|cov:)" "$log" | tail -1)
  execs=$(grep -oE "stat::number_of_executed_units:[[:space:]]+[0-9]+" "$log" | grep -oE "[0-9]+$" | tail -1)
  rate=$(grep -oE "stat::average_exec_per_sec:[[:space:]]+[0-9]+" "$log" | grep -oE "[0-9]+$" | tail -1)
  if [ -n "${FUZZ_KEEP_GOING:-}" ]; then  # fork mode: "#EXECS: cov: … exec/s: … time: Ns"
    execs=$(grep -oE "^#[0-9]+" <<<"$done_line" | tr -d '#'); rate=$(grep -oE "exec/s: [0-9]+" <<<"$done_line" | grep -oE "[0-9]+")
  fi
  cov=$(grep -oE "cov: [0-9]+" <<<"$done_line" | grep -oE "[0-9]+")
  ft=$(grep -oE "ft: [0-9]+" <<<"$done_line" | grep -oE "[0-9]+")
  corp=$(grep -oE "corp: [0-9]+" <<<"$done_line" | grep -oE "[0-9]+")
  crashes=$(find "$work/crashes" -name "$t-*" -newer "$work/logs/start" | wc -l)
  reports=$(grep -cE "ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|SUMMARY: |Fatal error|deadly signal" "$log")
  printf "%-16s %4ss execs %-10s exec/s %-7s cov %-6s ft %-7s corpus %-6s crashes %s%s\n" "$t" "$seconds" \
    "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes" \
    "$([ "$status" -ne 0 ] || [ "$reports" -ne 0 ] && echo "  FAILED (exit $status; see $log)")" \
    | tee "$work/logs/$t.summary"
  [ "$status" -eq 0 ] && [ "$crashes" -eq 0 ]
}

touch "$work/logs/start"
echo "== fuzzing ${#targets[@]} targets, ${seconds}s each, $jobs at a time"
failed=0
pids=()
for t in "${targets[@]}"; do
  run "$t" & pids+=($!)
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || failed=1; done
done
for p in $(jobs -rp); do wait "$p" || failed=1; done
# wait -n misses jobs that ended before it was called: count failures from the summaries.
grep -l "FAILED\|crashes [1-9]" "$work"/logs/*.summary >/dev/null 2>&1 && \
  for t in "${targets[@]}"; do grep -q "FAILED\|crashes [1-9]" "$work/logs/$t.summary" && failed=1; done
echo "== crash inputs, if any, are in $work/crashes"
ls "$work/crashes" | sed 's/^/   /'
[ "$failed" -eq 0 ] && echo "== no crashes, no sanitizer reports" || echo "== FAILURES: see above"
exit "$failed"
