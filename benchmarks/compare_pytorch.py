"""Times the benchmark rows in PyTorch (diffusers / transformers, CPU, 2 threads) on the same
random-weight SD 1.5 folder the Swift benchmark writes, runs the Swift benchmark for the same rows,
and prints one table: seconds, GFLOP/s, % of the OpenBLAS sgemm rate, peak RSS, and PyTorch/Swift.

    /work/.venv-ref/bin/python benchmarks/compare_pytorch.py unet vae-decode-512 text-encoder
    /work/.venv-ref/bin/python benchmarks/compare_pytorch.py all --skip-4096 --out results.json

Each row runs in a fresh process (Swift fp32, Swift bf16 where measured, then PyTorch fp32, then
bf16; each PyTorch ratio is against the Swift run of the same precision), one
after the other, so every peak RSS is that row's own. FLOP are counted by
torch.utils.flop_counter on the meta device (2·M·N·K per conv / linear / attention product) and
checked against the Swift benchmark's count from the configs. `--swift-json FILE` reuses Swift
results saved earlier (`panorama-benchmarks ROW --json`) instead of running Swift again.
"""
import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
ROWS = ["text-encoder", "unet", "vae-decode-512", "vae-decode-4096", "panorama-step", "load", "lcm-512"]
# Rows also measured with bf16 weights and activations (`.to(torch.bfloat16)`).
BF16_ROWS = {"unet", "vae-decode-512", "lcm-512"}
DEFAULT_RUNS = {"text-encoder": (1, 10), "unet": (1, 3), "vae-decode-512": (1, 3),
                "vae-decode-4096": (0, 1), "panorama-step": (0, 1), "load": (0, 1),
                "lcm-512": (0, 1)}


def vm_hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class LoadProbe:
    """CPU time of everything else on the machine during a measurement, in cores."""

    def __init__(self):
        self.wall, self.busy, self.steal, self.own = time.monotonic(), *self.system(), self.own_cpu()

    @staticmethod
    def system():
        v = [float(x) for x in open("/proc/stat").readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        return (v[0] + v[1] + v[2] + v[5] + v[6]) / hz, v[7] / hz

    @staticmethod
    def own_cpu():
        u = resource.getrusage(resource.RUSAGE_SELF)
        return u.ru_utime + u.ru_stime

    def finish(self):
        dt = time.monotonic() - self.wall
        busy, steal = self.system()
        return max(0.0, (busy - self.busy) - (self.own_cpu() - self.own)) / dt, (steal - self.steal) / dt


def count_flops(row):
    """GFLOP of one timed run of `row`, by torch's flop counter on the meta device."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    from torch.utils.flop_counter import FlopCounterMode

    layout = HERE / "sd15"
    with torch.device("meta"):
        if row in ("unet", "panorama-step"):
            m = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(layout / "unet"))
            run = lambda: m(torch.randn(2, 4, 64, 64), 981, torch.randn(2, 77, 768))
        elif row.startswith("vae-decode"):
            m = AutoencoderKL.from_config(AutoencoderKL.load_config(layout / "vae"))
            w = 512 if row == "vae-decode-4096" else 64
            run = lambda: m.decode(torch.randn(1, 4, 64, w))
        elif row == "text-encoder":
            m = CLIPTextModel(CLIPTextConfig.from_pretrained(layout / "text_encoder"))
            run = lambda: m(torch.zeros(2, 77, dtype=torch.long))
        else:
            return None
        counter = FlopCounterMode(display=False)
        with counter:
            run()
    flops = counter.get_total_flops() / 1e9
    return flops * 25 if row == "panorama-step" else flops


def worker(row, dtype_name, folder, warmups, runs):
    """Measures one row in this (fresh) process; returns a result dict."""
    import torch
    torch.set_num_threads(2)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    from diffusers import AutoencoderKL, UNet2DConditionModel
    g = torch.Generator().manual_seed(0)
    extra = {}

    def timed(fn):
        for _ in range(warmups):
            fn()
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    with torch.inference_mode():
        if row == "unet":
            unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=dtype).eval()
            x = torch.randn(2, 4, 64, 64, generator=g).to(dtype)
            ctx = torch.randn(2, 77, 768, generator=g).to(dtype)
            probe = LoadProbe()
            seconds = timed(lambda: unet(x, 981, encoder_hidden_states=ctx))
        elif row.startswith("vae-decode"):
            vae = AutoencoderKL.from_pretrained(folder / "vae", dtype=dtype).eval()
            z = torch.randn(1, 4, 64, 512 if row == "vae-decode-4096" else 64, generator=g).to(dtype)
            probe = LoadProbe()
            seconds = timed(lambda: vae.decode(z))
        elif row == "text-encoder":
            from transformers import CLIPTextModel, CLIPTokenizer
            encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=dtype).eval()
            tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
            ids = tokenizer(["", "snowy mountains at sunset, a wide panorama"], padding="max_length",
                            max_length=77, return_tensors="pt").input_ids
            probe = LoadProbe()
            seconds = timed(lambda: encoder(ids))
        elif row == "panorama-step":
            from diffusers import DDIMScheduler, StableDiffusionPanoramaPipeline
            pipe = StableDiffusionPanoramaPipeline.from_pretrained(folder, dtype=dtype,
                                                                   safety_checker=None)
            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
            pipe.set_progress_bar_config(disable=True)
            marks = {}
            def first_call(*_):
                marks.setdefault("start", time.perf_counter())  # returns None: inputs unchanged

            pipe.unet.register_forward_pre_hook(first_call)

            def step_end(p, step, timestep, kwargs):
                marks["end"] = time.perf_counter()
                p._interrupt = True  # time the first of the 50 steps only
                return kwargs

            probe = LoadProbe()
            pipe("snowy mountains at sunset", height=512, width=2048, num_inference_steps=50,
                 generator=torch.Generator().manual_seed(1), output_type="latent",
                 callback_on_step_end=step_end)
            seconds = [marks["end"] - marks["start"]]
            warmups = 0
            extra["seconds per view (min)"] = seconds[0] / 25
        elif row == "load":
            from diffusers import StableDiffusionPipeline
            probe = LoadProbe()
            t0 = time.perf_counter()
            pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=dtype, safety_checker=None)
            t1 = time.perf_counter()
            pipe.unet(torch.randn(2, 4, 64, 64, generator=g).to(dtype), 981,
                      encoder_hidden_states=torch.randn(2, 77, 768, generator=g).to(dtype))
            t2 = time.perf_counter()
            seconds, warmups = [t2 - t0], 0
            extra = {"open seconds": t1 - t0, "first UNet call seconds": t2 - t1}
        elif row == "lcm-512":
            # diffusers + the same LCM-LoRA-shaped kohya file (fused, as a merge), LCMScheduler, 4 steps,
            # guidance 1: text encoding, 4 UNet calls and the VAE decode, after load and a first UNet call.
            from diffusers import LCMScheduler, StableDiffusionPipeline
            pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32, safety_checker=None)
            pipe.load_lora_weights(str(folder / "lcm-shaped-lora.safetensors"))
            pipe.fuse_lora()
            pipe.unload_lora_weights()
            pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
            pipe.to(dtype)
            pipe.set_progress_bar_config(disable=True)
            pipe.unet(torch.randn(1, 4, 64, 64, generator=g).to(dtype), 999,
                      encoder_hidden_states=torch.randn(1, 77, 768, generator=g).to(dtype))
            run = lambda: pipe("snowy mountains at sunset", height=512, width=512, num_inference_steps=4,
                               guidance_scale=1.0, generator=torch.Generator().manual_seed(1), output_type="np")
            probe = LoadProbe()
            seconds = timed(run)
        else:
            raise SystemExit(f"unknown row {row}")
    other, steal = probe.finish()
    return {"row": row, "dtype": dtype_name, "seconds": seconds, "warmups": warmups,
            "min_seconds": min(seconds), "median_seconds": statistics.median(seconds),
            "peak_rss_bytes": vm_hwm(), "other_load_cores": other, "steal_cores": steal,
            "torch": torch.__version__, "extra": extra}


def run_json(command):
    print("+", " ".join(map(str, command)), file=sys.stderr, flush=True)
    out = subprocess.run(command, stdout=subprocess.PIPE, check=True).stdout
    return json.loads(out)


def gib(b):
    return f"{b / 2**30:.2f} GiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", nargs="*", help=f"rows: {', '.join(ROWS)}, all")
    ap.add_argument("--swift", default=str(HERE.parent / ".build-bench/release/panorama-benchmarks"),
                    help="the Swift benchmark executable")
    ap.add_argument("--swift-json", help="Swift results saved earlier (one object or a list) instead of running Swift")
    ap.add_argument("--cache", default=str(HERE / ".cache/sd15-random"), help="the random-weight folder")
    ap.add_argument("--skip-4096", action="store_true", help="leave vae-decode-4096 out of `all`")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 PyTorch measurements")
    ap.add_argument("--runs", type=int, help="timed runs per row (default per row, as in Swift)")
    ap.add_argument("--out", help="also write all results as JSON here")
    ap.add_argument("--worker", nargs=2, metavar=("ROW", "DTYPE"), help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        row, dtype = a.worker
        warmups, runs = DEFAULT_RUNS[row]
        print(json.dumps(worker(row, dtype, pathlib.Path(a.cache), warmups, a.runs or runs)))
        return

    if not a.rows:
        ap.error("give at least one row")
    rows = [r for r in ROWS if not (a.skip_4096 and r == "vae-decode-4096")] if "all" in a.rows else a.rows
    for r in rows:
        if r not in ROWS:
            raise SystemExit(f"unknown row {r}; rows: {', '.join(ROWS)}, all")
    saved = {}
    if a.swift_json:
        data = json.load(open(a.swift_json))
        saved = {d["row"]: d for d in (data if isinstance(data, list) else [data])}

    results = []
    for row in rows:
        swift = saved.get(row)
        if swift is None:
            command = [a.swift, row, "--json", "--cache", a.cache] + (["--runs", str(a.runs)] if a.runs else [])
            swift = run_json(command)
        entry = {"row": row, "swift": swift, "gflop": swift.get("gflop"), "torch": {}, "swift_bf16": None}
        if row in BF16_ROWS and not a.no_bf16:
            # The engine's own bf16 path (--precision bf16), compared with PyTorch bf16.
            command = [a.swift, row, "--json", "--cache", a.cache, "--precision", "bf16"] + (["--runs", str(a.runs)] if a.runs else [])
            entry["swift_bf16"] = run_json(command)
        torch_gflop = count_flops(row)
        if torch_gflop is not None and swift.get("gflop") is not None:
            entry["gflop_torch_counter"] = torch_gflop
            if abs(torch_gflop - swift["gflop"]) > 1e-3 * swift["gflop"]:
                print(f"warning: {row}: torch counts {torch_gflop:.1f} GFLOP, Swift {swift['gflop']:.1f}", file=sys.stderr)
        for dtype in ["fp32"] + (["bf16"] if row in BF16_ROWS and not a.no_bf16 else []):
            command = [sys.executable, __file__, "--worker", row, dtype, "--cache", a.cache]
            entry["torch"][dtype] = run_json(command + (["--runs", str(a.runs)] if a.runs else []))
        results.append(entry)

    def cells(r, gflop, sgemm):
        rate = gflop / r["min_seconds"] if gflop else None
        return [f"{r['min_seconds']:.3f} / {r['median_seconds']:.3f}",
                f"{rate:.1f}" if rate else "–",
                f"{100 * rate / sgemm:.0f} %" if rate and sgemm else "–",
                gib(r["peak_rss_bytes"]), f"{r['other_load_cores']:.2f}"]

    print("| row | impl | runs | min / median s | GFLOP/s | % of sgemm | peak RSS | other load (cores) | PyTorch / Swift (min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for e in results:
        s, gflop, sgemm = e["swift"], e["gflop"], e["swift"].get("sgemm_gflops")
        runs = lambda r: f"{len(r['seconds'])}" + (f" (+{r['warmups']})" if r.get("warmups") else "")
        print("| " + " | ".join([e["row"], "Swift fp32", runs(s)] + cells(s, gflop, sgemm) + ["1"]) + " |")
        if e["swift_bf16"]:
            b = e["swift_bf16"]
            print("| " + " | ".join([e["row"], "Swift bf16", runs(b)] + cells(b, gflop, sgemm) + ["1"]) + " |")
        for dtype, t in e["torch"].items():
            same = e["swift_bf16"] if dtype == "bf16" and e["swift_bf16"] else s
            ratio = t["min_seconds"] / same["min_seconds"]
            print("| " + " | ".join([e["row"], f"PyTorch {t['torch']} {dtype}", runs(t)] + cells(t, gflop, sgemm)
                                    + [f"{ratio:.2f}"]) + " |")
    print()
    for e in results:
        g = f"{e['gflop']:.1f} GFLOP (torch counter {e.get('gflop_torch_counter', float('nan')):.1f})" if e["gflop"] else ""
        sg = e["swift"].get("sgemm_gflops")
        print(f"- {e['row']}: {g}" + (f"; sgemm ceiling in the Swift process {sg:.1f} GFLOP/s" if sg else "")
              + "".join(f"; Swift {k} {v:.2f}" for k, v in e["swift"].get("extra", {}).items() if isinstance(v, float))
              + "".join(f"; PyTorch {d} {k} {v:.2f}" for d, t in e["torch"].items() for k, v in t["extra"].items()))
    if a.out:
        pathlib.Path(a.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
