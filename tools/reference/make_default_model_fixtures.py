#!/usr/bin/env python3
"""diffusers on the shipped default model (models/landscape-demo): one 512x512 window, for the engine's
parity test on the real model.

    . /work/.venv-ref/bin/activate
    python tools/reference/make_default_model_fixtures.py   # writes Tests/Fixtures/golden/landscape-demo/

Loads the folder with StableDiffusionPipeline.from_pretrained (fp16 weights upcast to float32 on CPU),
renders "snowy mountains at sunset" with DDIM, 20 steps, guidance 5, seed 7, and stores the initial
and final latents and the image (uint8 [H, W, 3]) in sd_window.safetensors.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import make_fixtures as mf  # noqa: E402

from diffusers import DDIMScheduler, StableDiffusionPipeline  # noqa: E402

PROMPT, STEPS, GUIDANCE, SEED = "snowy mountains at sunset", 20, 5.0, 7


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(REPO, "models", "landscape-demo"))
    ap.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures", "golden", "landscape-demo"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    assert isinstance(pipe.scheduler, DDIMScheduler), type(pipe.scheduler)
    pipe.set_progress_bar_config(disable=True)
    rec = {}
    orig = type(pipe).prepare_latents

    def prepare(*a, **k):
        lat = orig(pipe, *a, **k)
        rec["initial_latent"] = mf.f32(lat)
        return lat

    pipe.prepare_latents = prepare
    final = pipe(PROMPT, height=512, width=512, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                 generator=torch.Generator("cpu").manual_seed(SEED), output_type="latent").images
    decoded = pipe.vae.decode(final / pipe.vae.config.scaling_factor).sample
    img = pipe.image_processor.postprocess(decoded, output_type="np")[0]
    u8 = np.round(img.astype(np.float32) * np.float32(255)).astype(np.uint8)
    os.makedirs(args.out, exist_ok=True)
    mf.save_tensors(os.path.join(args.out, "sd_window.safetensors"),
                    {"initial_latent": rec["initial_latent"], "final_latent": mf.f32(final),
                     "image_u8": torch.from_numpy(np.ascontiguousarray(u8))})
    with open(os.path.join(args.out, "sd_window.json"), "w") as f:
        json.dump(dict(prompt=PROMPT, steps=STEPS, guidance=GUIDANCE, seed=SEED, size=[512, 512],
                       pipeline="StableDiffusionPipeline", scheduler="DDIMScheduler"), f, indent=1)
    print("final latent max", float(final.abs().max()), "image mean", float(u8.mean()))


if __name__ == "__main__":
    main()
