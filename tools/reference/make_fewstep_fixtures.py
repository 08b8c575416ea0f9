#!/usr/bin/env python3
"""Few-step fixtures: what diffusers renders at one window (512x512) with the few-step samplers, from
the seed alone, for the Swift end-to-end parity tests (Tests/RendererTests/FewStepParityTests.swift).

Cases (prompt "snowy mountains at sunset", seed 1234, StableDiffusionPipeline unless named):
    lcm_lora          tiny-pano + lora/kohya-locon.safetensors (weight 1), LCMScheduler, 4 steps, guidance 1
    lcm_demo          models/landscape-demo (v-prediction, zero terminal SNR), LCMScheduler, 4 steps, guidance 1
    lcm_time_cond     models/tiny-lcm (tiny-pano with time_cond_proj_dim 16, an LCMScheduler file),
                      LatentConsistencyModelPipeline, 4 steps, guidance 8.5 (embedded, no CFG pair)
    tcd_eta0          tiny-pano, TCDScheduler, 4 steps, eta (gamma) 0, guidance 3 (CFG)
    tcd_eta0.3        tiny-pano, TCDScheduler, 4 steps, eta 0.3, guidance 1
    euler_a_trailing1 tiny-pano, EulerAncestralDiscreteScheduler with timestep_spacing "trailing", 1 step, guidance 1
    euler_a_trailing4 the same at 4 steps

Each golden/fewstep/<case>.safetensors holds initial_latent, final_latent [1, 4, 64, 64] (what the pipeline decodes),
timesteps and image_u8 [512, 512, 3]; initial_latent is scaled by the sampler's initial σ. Also writes Tests/Fixtures/models/tiny-lcm (its UNet; the other components
are symbolic links to tiny-pano's).

    . /work/.venv-ref/bin/activate
    python tools/reference/make_fewstep_fixtures.py
"""
import argparse
import json
import os
import shutil

import numpy as np
import torch
from diffusers import (EulerAncestralDiscreteScheduler, LatentConsistencyModelPipeline, LCMScheduler,
                       StableDiffusionPipeline, TCDScheduler, UNet2DConditionModel)
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROMPT, SEED, SIZE = "snowy mountains at sunset", 1234, 512
TIME_COND_DIM = 16


def make_tiny_lcm(fixtures):
    """tiny-pano's UNet with a guidance embedding (cond_proj) added, and an LCMScheduler file."""
    src, dst = os.path.join(fixtures, "models/tiny-pano"), os.path.join(fixtures, "models/tiny-lcm")
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.makedirs(os.path.join(dst, "scheduler"))
    for part in ("text_encoder", "tokenizer", "vae"):
        os.symlink(os.path.join("..", "tiny-pano", part), os.path.join(dst, part))
    base = UNet2DConditionModel.from_pretrained(os.path.join(src, "unet"))
    config = dict(base.config)
    config["time_cond_proj_dim"] = TIME_COND_DIM
    unet = UNet2DConditionModel.from_config(config)
    missing, unexpected = unet.load_state_dict(base.state_dict(), strict=False)
    assert missing == ["time_embedding.cond_proj.weight"] and not unexpected, (missing, unexpected)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        unet.time_embedding.cond_proj.weight.copy_(torch.randn(unet.time_embedding.cond_proj.weight.shape, generator=g) * 0.2)
    unet.save_pretrained(os.path.join(dst, "unet"))
    with open(os.path.join(src, "scheduler/scheduler_config.json")) as f:
        ddim = json.load(f)
    lcm = dict(LCMScheduler.from_config(ddim).config)
    lcm = {k: v for k, v in lcm.items() if not k.startswith("_")}
    lcm = {"_class_name": "LCMScheduler", "_diffusers_version": "0.42.1", **lcm}
    with open(os.path.join(dst, "scheduler/scheduler_config.json"), "w") as f:
        json.dump(lcm, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(src, "model_index.json")) as f:
        index = json.load(f)
    index["scheduler"] = ["diffusers", "LCMScheduler"]
    index["_class_name"] = "LatentConsistencyModelPipeline"
    with open(os.path.join(dst, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return dst


def run(pipe, steps, guidance, **kw):
    rec = {}

    def grab(p, i, t, cb):
        rec.setdefault("timesteps", []).append(int(t))
        return {}

    g = torch.Generator().manual_seed(SEED)
    shape = (1, pipe.unet.config.in_channels, SIZE // 8, SIZE // 8)
    initial = torch.randn(shape, generator=torch.Generator().manual_seed(SEED))
    out = pipe(PROMPT, height=SIZE, width=SIZE, num_inference_steps=steps, guidance_scale=guidance, generator=g,
               output_type="latent", callback_on_step_end=grab, **kw)
    latent = out.images
    initial = initial * pipe.scheduler.init_noise_sigma  # as the pipeline scales it (Euler's σ_max)
    with torch.no_grad():
        image = pipe.vae.decode(latent / pipe.vae.config.scaling_factor).sample
    image = (image / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    u8 = torch.from_numpy(np.round(image * 255).astype(np.uint8).copy())
    return {"initial_latent": initial.contiguous(), "final_latent": latent.float().contiguous(),
            "timesteps": torch.tensor(rec["timesteps"], dtype=torch.int64), "image_u8": u8}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "Tests/Fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    fixtures = args.out
    out_dir = os.path.join(fixtures, "golden/fewstep")
    os.makedirs(out_dir, exist_ok=True)
    tiny = os.path.join(fixtures, "models/tiny-pano")
    tiny_lcm = make_tiny_lcm(fixtures)
    cases = {}

    def sd(folder):
        return StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False,
                                                   torch_dtype=torch.float32)

    pipe = sd(tiny)
    pipe.load_lora_weights(os.path.join(fixtures, "lora/kohya-locon.safetensors"), adapter_name="kohya")
    pipe.set_adapters(["kohya"], [1.0])
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    cases["lcm_lora"] = (run(pipe, 4, 1.0), {"model": "tiny-pano", "sampler": "lcm", "steps": 4, "guidance": 1.0,
                                             "lora": "kohya-locon.safetensors"})

    pipe = sd(os.path.join(REPO, "models/landscape-demo"))
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    cases["lcm_demo"] = (run(pipe, 4, 1.0), {"model": "landscape-demo", "sampler": "lcm", "steps": 4, "guidance": 1.0})

    pipe = LatentConsistencyModelPipeline.from_pretrained(tiny_lcm, safety_checker=None, requires_safety_checker=False,
                                                   torch_dtype=torch.float32)
    assert isinstance(pipe.scheduler, LCMScheduler)
    cases["lcm_time_cond"] = (run(pipe, 4, 8.5), {"model": "tiny-lcm", "sampler": "lcm", "steps": 4, "guidance": 8.5})

    base = sd(tiny)
    ddim_config = base.scheduler.config
    base.scheduler = TCDScheduler.from_config(ddim_config)
    cases["tcd_eta0"] = (run(base, 4, 3.0, eta=0.0), {"model": "tiny-pano", "sampler": "tcd", "steps": 4,
                                                      "guidance": 3.0, "eta": 0.0})
    base.scheduler = TCDScheduler.from_config(ddim_config)
    cases["tcd_eta0.3"] = (run(base, 4, 1.0, eta=0.3), {"model": "tiny-pano", "sampler": "tcd", "steps": 4,
                                                        "guidance": 1.0, "eta": 0.3})
    for steps in (1, 4):
        base.scheduler = EulerAncestralDiscreteScheduler.from_config(ddim_config, timestep_spacing="trailing")
        cases[f"euler_a_trailing{steps}"] = (run(base, steps, 1.0), {
            "model": "tiny-pano", "sampler": "euler-a", "steps": steps, "guidance": 1.0,
            "timestep_spacing": "trailing"})

    manifest = {}
    for name, (tensors, settings) in cases.items():
        save_file(tensors, os.path.join(out_dir, f"{name}.safetensors"))
        manifest[name] = dict(settings, timesteps=tensors["timesteps"].tolist(),
                              max_abs_latent=float(tensors["final_latent"].abs().max()))
        print(name, manifest[name])
    manifest = {"prompt": PROMPT, "seed": SEED, "width": SIZE, "height": SIZE, "cases": manifest}
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
