"""Golden trajectories of diffusers' DPMSolverMultistepScheduler (DPM-Solver++ 2M),
EulerDiscreteScheduler and EulerAncestralDiscreteScheduler for the Swift sampler tests.

Each case is a scheduler_config.json as a model folder would hold it (DDIM files, as the engine's
models have), turned into the sampler the way a diffusers user does it:
`DPMSolverMultistepScheduler.from_config(DDIMScheduler.from_config(file).config,
use_karras_sigmas=...)` (likewise the Euler classes), so keys the file leaves out take the
sampler's own defaults. Euler cases also store each step's scaled model input, the timestep the
UNet gets (fractional with "linspace") and, for Euler a, the noise each step draws.
For every step the scheduler is given a model output (stored) and its `prev_sample` is stored, so
the test replays the same outputs and compares each step. The `img2img` cases start at a later
step with `set_begin_index`, as diffusers' img2img pipelines do, after `add_noise` at that step.

Writes Tests/Fixtures/golden/sampler_cases.json and sampler.safetensors (about 130 KB), and
golden/tiny-pano/pano_dpm_karras.safetensors and pano_euler_a.safetensors: diffusers'
StableDiffusionPanoramaPipeline on the committed tiny-pano model with DPM-Solver++ 2M Karras and
with Euler a (512x1024, 8 steps, guidance 7.5, seed 1234; view batches of 1 and of 4), the latents
after the first and the last step.

    . /work/.venv-ref/bin/activate
    python tools/reference/make_sampler_fixtures.py
"""

import argparse
import json
import os

import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler)
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

SD15_FILE = {  # SD 1.5's scheduler_config.json (its DDIM form): no timestep_spacing key
    "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "trained_betas": None,
}
DEMO_FILE = dict(SD15_FILE, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                 timestep_spacing="trailing")  # the bundled landscape-demo model's

CASES = {
    "sd15_linspace": dict(file=SD15_FILE, karras=False, steps=20),
    "sd15_karras": dict(file=SD15_FILE, karras=True, steps=20),
    "sd15_leading": dict(file=dict(SD15_FILE, timestep_spacing="leading"), karras=False, steps=12),
    "demo_trailing": dict(file=DEMO_FILE, karras=False, steps=10),
    "demo_karras": dict(file=DEMO_FILE, karras=True, steps=8),
    "linear_sample_threshold": dict(file={"_class_name": "DDIMScheduler", "beta_schedule": "linear",
                                          "prediction_type": "sample", "thresholding": True,
                                          "sample_max_value": 1.5, "timestep_spacing": "linspace"},
                                    karras=False, steps=5),
    "one_step": dict(file=SD15_FILE, karras=False, steps=1),
    "sd15_img2img": dict(file=SD15_FILE, karras=False, steps=20, begin=6),
    "demo_img2img": dict(file=DEMO_FILE, karras=True, steps=10, begin=3),
    "euler_sd15_linspace": dict(kind="euler", file=SD15_FILE, karras=False, steps=20),
    "euler_sd15_leading": dict(kind="euler", file=dict(SD15_FILE, timestep_spacing="leading"), karras=False, steps=12),
    "euler_demo_trailing": dict(kind="euler", file=DEMO_FILE, karras=False, steps=10),
    "euler_a_sd15": dict(kind="euler_a", file=SD15_FILE, karras=False, steps=15),
    "euler_a_demo": dict(kind="euler_a", file=DEMO_FILE, karras=False, steps=10),
    "euler_img2img": dict(kind="euler", file=SD15_FILE, karras=False, steps=20, begin=6),
}


def make_scheduler(case):
    ddim = DDIMScheduler.from_config(case["file"])
    kind = case.get("kind", "dpm")
    if kind == "euler":
        return EulerDiscreteScheduler.from_config(ddim.config)
    if kind == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(ddim.config)
    return DPMSolverMultistepScheduler.from_config(ddim.config, use_karras_sigmas=case["karras"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures", "golden"))
    ap.add_argument("--no-panorama", action="store_true", help="only the scheduler trajectories")
    args = ap.parse_args()
    torch.manual_seed(0)
    tensors, meta = {}, {}
    for name, case in CASES.items():
        s = make_scheduler(case)
        s.set_timesteps(case["steps"])
        g = torch.Generator().manual_seed(len(name))
        shape = (2, 4, 4, 4)
        begin = case.get("begin", 0)
        x = torch.randn(shape, generator=g)
        if begin:
            s.set_begin_index(begin)
            noise = torch.randn(shape, generator=g)
            tensors[f"{name}.clean"] = x.clone()
            tensors[f"{name}.noise"] = noise.clone()
            x = s.add_noise(x, noise, s.timesteps[begin:begin + 1])
            tensors[f"{name}.noisy"] = x.clone()
        else:
            x = x * s.init_noise_sigma
        tensors[f"{name}.start"] = x.clone()
        ts = s.timesteps.tolist()
        euler = case.get("kind", "dpm") != "dpm"
        for i, t in enumerate(ts[begin:]):
            # an output that depends on the (scaled) input, as a model's does, plus fresh variation
            inp = s.scale_model_input(x, t)
            out = 0.4 * inp + 0.6 * torch.randn(shape, generator=g)
            if case.get("kind") == "euler_a":
                noise = torch.randn(shape, generator=torch.Generator().manual_seed(1000 + i))
                x = s.step(out, t, x, generator=torch.Generator().manual_seed(1000 + i)).prev_sample
                tensors[f"{name}.noise_{i}"] = noise
            else:
                x = s.step(out, t, x).prev_sample
            if euler:
                tensors[f"{name}.scaled_{i}"] = inp.clone()
            tensors[f"{name}.output_{i}"] = out.clone()
            tensors[f"{name}.prev_{i}"] = x.clone()
        tensors[f"{name}.sigmas"] = s.sigmas.clone().float()
        meta[name] = dict(kind=case.get("kind", "dpm"), file=case["file"], karras=case["karras"],
                          steps=case["steps"], begin=begin,
                          timesteps=[int(round(float(t))) for t in ts], model_timesteps=[float(t) for t in ts],
                          init_noise_sigma=float(s.init_noise_sigma),
                          timestep_spacing=s.config.timestep_spacing)
    os.makedirs(args.out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(args.out, "sampler.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(args.out, "sampler_cases.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{len(CASES)} cases, {len(tensors)} tensors -> {args.out}")
    if not args.no_panorama:
        panorama(os.path.join(os.path.dirname(args.out), "models", "tiny-pano"), os.path.join(args.out, "tiny-pano"))


@torch.no_grad()
def panorama(model_dir, out_dir):
    from diffusers import StableDiffusionPanoramaPipeline
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    pipe = StableDiffusionPanoramaPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    ddim_config = pipe.scheduler.config
    samplers = {
        "pano_dpm_karras": DPMSolverMultistepScheduler.from_config(ddim_config, use_karras_sigmas=True),
        "pano_euler_a": EulerAncestralDiscreteScheduler.from_config(ddim_config),
    }
    for name, scheduler in samplers.items():
        pipe.scheduler = scheduler
        out = {}
        for batch in (1, 4):
            rec = {}

            def on_step(p, i, t, kw):
                if i == 0:
                    rec["latents_step0"] = kw["latents"].clone()
                return {}

            lat = pipe(prompt="snowy mountains at sunset", negative_prompt="", height=512, width=1024,
                       num_inference_steps=8, guidance_scale=7.5, view_batch_size=batch,
                       generator=torch.Generator("cpu").manual_seed(1234), output_type="latent",
                       callback_on_step_end=on_step).images
            out[f"batch{batch}.latents_step0"] = rec["latents_step0"].float().contiguous()
            out[f"batch{batch}.final_latent"] = lat.float().contiguous()
        out["timesteps"] = pipe.scheduler.timesteps.to(torch.int64).clone()
        save_file(out, os.path.join(out_dir, f"{name}.safetensors"), metadata={"format": "pt"})
        d = (out["batch1.final_latent"] - out["batch4.final_latent"]).abs().max().item()
        print(f"{name}: timesteps {out['timesteps'].tolist()}, batch 1 vs 4 max diff {d:.2e}")


if __name__ == "__main__":
    main()
