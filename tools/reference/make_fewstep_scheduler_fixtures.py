"""Golden trajectories of diffusers' few-step samplers for the Swift tests
(Tests/SchedulersTests/FewStepSchedulerTests.swift): LCMScheduler at 1, 2, 4 and 8 steps,
TCDScheduler at 4 steps with eta (gamma) 0 and 0.3 and at 1 step, and EulerAncestralDiscreteScheduler
and DDIMScheduler with `timestep_spacing="trailing"` at 1 and 4 steps (DDIM also with eta 0.5).

Two scheduler files: SD 1.5's (DDIM form, epsilon, no timestep_spacing key) and the bundled
landscape-demo model's (v-prediction, zero terminal SNR, trailing). Each is turned into the
sampler the way a diffusers user does it, `LCMScheduler.from_config(DDIMScheduler.from_config(file).config)`
(with `timestep_spacing="trailing"` as a from_config keyword for Euler a and DDIM).

Every step gets a stored model output (0.4 · sample + 0.6 · fresh randn, as a model's output
depends on its input) and a seeded torch.Generator, as pipelines pass theirs; the noise the
scheduler draws is recorded by wrapping `randn_tensor` in the scheduler's module, with the index of
each step that drew. Stored per step: output_i, noise_i (when drawn), prev_i, and LCM's denoised_i /
TCD's noised_i (pred_noised_sample) at the steps that draw (elsewhere they are prev_i).
Samples are [1, 4, 8, 8]; about 270 KB in all.

Writes Tests/Fixtures/golden/fewstep_cases.json and fewstep.safetensors.

    . /work/.venv-ref/bin/activate
    python tools/reference/make_fewstep_scheduler_fixtures.py
"""

import argparse
import json
import os
import sys

import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, LCMScheduler, TCDScheduler
from diffusers.schedulers import (scheduling_ddim, scheduling_euler_ancestral_discrete, scheduling_lcm,
                                  scheduling_tcd)
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from make_sampler_fixtures import SD15_FILE  # noqa: E402  SD 1.5's scheduler file in its DDIM form

with open(os.path.join(REPO, "models", "landscape-demo", "scheduler", "scheduler_config.json")) as f:
    DEMO_FILE = json.load(f)

FILES = {"sd15": SD15_FILE, "demo": DEMO_FILE}
SHAPE = (1, 4, 8, 8)

# the noise each scheduler module draws, recorded as (step index, tensor)
DRAWN = []
CURRENT_STEP = [0]


def recording(original):
    def randn_tensor(*args, **kwargs):
        out = original(*args, **kwargs)
        DRAWN.append((CURRENT_STEP[0], out.clone()))
        return out
    return randn_tensor


for module in (scheduling_ddim, scheduling_euler_ancestral_discrete, scheduling_lcm, scheduling_tcd):
    module.randn_tensor = recording(module.randn_tensor)


def cases():
    out = {}
    for cfg_name in FILES:
        file = FILES[cfg_name]
        for steps in (1, 2, 4, 8):
            out[f"lcm_{cfg_name}_{steps}"] = dict(kind="lcm", file=cfg_name, steps=steps, eta=0.0)
        for steps, eta in ((4, 0.0), (4, 0.3), (1, 0.3)):
            out[f"tcd_{cfg_name}_{steps}_eta{eta}"] = dict(kind="tcd", file=cfg_name, steps=steps, eta=eta)
        for steps in (1, 4):
            out[f"euler_a_trailing_{cfg_name}_{steps}"] = dict(kind="euler_a", file=cfg_name, steps=steps, eta=0.0,
                                                              spacing="trailing")
            out[f"ddim_trailing_{cfg_name}_{steps}"] = dict(kind="ddim", file=cfg_name, steps=steps, eta=0.0,
                                                           spacing="trailing")
        out[f"ddim_trailing_{cfg_name}_4_eta0.5"] = dict(kind="ddim", file=cfg_name, steps=4, eta=0.5, spacing="trailing")
    return out


def make_scheduler(case):
    config = DDIMScheduler.from_config(FILES[case["file"]]).config
    extra = {"timestep_spacing": case["spacing"]} if "spacing" in case else {}
    cls = {"lcm": LCMScheduler, "tcd": TCDScheduler, "euler_a": EulerAncestralDiscreteScheduler,
           "ddim": DDIMScheduler}[case["kind"]]
    return cls.from_config(config, **extra)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures", "golden"))
    args = ap.parse_args()
    tensors, meta = {}, {}
    for n, (name, case) in enumerate(cases().items()):
        s = make_scheduler(case)
        s.set_timesteps(case["steps"])
        data = torch.Generator().manual_seed(100 + n)      # samples and model outputs
        generator = torch.Generator().manual_seed(1000 + n)  # the pipeline's generator, given to step
        x = torch.randn(SHAPE, generator=data) * s.init_noise_sigma
        tensors[f"{name}.start"] = x.clone()
        DRAWN.clear()
        drawn = []
        for i, t in enumerate(s.timesteps):
            CURRENT_STEP[0] = i
            inp = s.scale_model_input(x, t)
            out = 0.4 * inp + 0.6 * torch.randn(SHAPE, generator=data)
            kwargs = dict(generator=generator)
            if case["kind"] in ("tcd", "ddim"):
                kwargs["eta"] = case["eta"]
            before = len(DRAWN)
            result = s.step(out, t, x, **kwargs)
            x = result.prev_sample
            assert len(DRAWN) - before <= 1
            if len(DRAWN) > before:
                drawn.append(i)
                tensors[f"{name}.noise_{i}"] = DRAWN[-1][1]
            tensors[f"{name}.output_{i}"] = out.clone()
            tensors[f"{name}.prev_{i}"] = x.clone()
            # LCM's denoised and TCD's pred_noised_sample, where they are not prev_sample itself
            # (the last step, and every TCD step with eta 0)
            if case["kind"] == "lcm" and i in drawn:
                tensors[f"{name}.denoised_{i}"] = result.denoised.clone()
            if case["kind"] == "tcd" and i in drawn:
                tensors[f"{name}.noised_{i}"] = result.pred_noised_sample.clone()
        ts = s.timesteps.tolist()
        meta[name] = dict(kind=case["kind"], file=case["file"], steps=case["steps"], eta=case["eta"],
                          timestep_spacing=case.get("spacing"), timesteps=[int(round(float(t))) for t in ts],
                          model_timesteps=[float(t) for t in ts], init_noise_sigma=float(s.init_noise_sigma),
                          drawn=drawn)
        print(f"{name}: timesteps {meta[name]['timesteps']}, noise at steps {drawn}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "fewstep.safetensors")
    save_file({k: v.contiguous().float() for k, v in tensors.items()}, path, metadata={"format": "pt"})
    with open(os.path.join(args.out, "fewstep_cases.json"), "w") as f:
        json.dump(dict(files=FILES, cases=meta), f, indent=1)
    print(f"{len(meta)} cases, {len(tensors)} tensors, {os.path.getsize(path)} bytes -> {args.out}")


if __name__ == "__main__":
    main()
