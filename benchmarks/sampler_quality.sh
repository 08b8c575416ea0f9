#!/usr/bin/env bash
# How close each sampler gets, at few steps, to a 200-step DDIM render of the same seed: renders
# 512x512 pictures with the bundled model (its preset: guidance 5, zero-SNR trailing schedule)
# and prints the mean absolute difference per pixel channel (0-255) to the reference.
#   benchmarks/sampler_quality.sh [PANORAMA_BINARY] [OUT_DIR]
set -euo pipefail
BIN="${1:-.build/release/panorama}"
OUT="${2:-/tmp/sampler-quality}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
PROMPTS=("snowy mountains at sunset" "a calm sea at noon" "desert dunes at night")
render() {  # seed sampler steps
    local f="$OUT/s$1-$2-$3.png"
    [ -f "$f" ] || "$BIN" --W 512 --H 512 --prompt "${PROMPTS[$1]}" --seed "$1" --scheduler "$2" --steps "$3" \
        --quiet -o "$f" --overwrite > /dev/null
}
for seed in 0 1 2; do
    render $seed ddim 200
    for steps in 10 20 50; do render $seed ddim $steps; done
    for s in dpm++2m dpm++2m-karras euler; do for steps in 10 20; do render $seed $s $steps; done; done
done
"$PY" - "$OUT" <<'PYEOF'
import sys, glob, os
import numpy as np
from PIL import Image
out = sys.argv[1]
rows = {}
for seed in range(3):
    ref = np.asarray(Image.open(f"{out}/s{seed}-ddim-200.png").convert("RGB"), dtype=np.float64)
    for f in sorted(glob.glob(f"{out}/s{seed}-*.png")):
        key = os.path.basename(f)[len(f"s{seed}-"):-4]
        if key == "ddim-200":
            continue
        img = np.asarray(Image.open(f).convert("RGB"), dtype=np.float64)
        rows.setdefault(key, []).append(np.abs(img - ref).mean())
print("| sampler-steps | mean abs difference to DDIM 200 (seeds 0, 1, 2) | mean |")
print("|---|---|---|")
for key in sorted(rows, key=lambda k: (k.rsplit("-", 1)[0], int(k.rsplit("-", 1)[1]))):
    v = rows[key]
    print(f"| {key} | {', '.join(f'{x:.2f}' for x in v)} | {np.mean(v):.2f} |")
PYEOF
