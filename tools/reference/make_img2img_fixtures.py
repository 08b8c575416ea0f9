#!/usr/bin/env python3
"""img2img fixtures for the tiled upscaler's parity tests (diffusers StableDiffusionImg2ImgPipeline, DDIM).

Uses the committed random-weight model ``Tests/Fixtures/models/tiny-pano`` (64x64 latent window, so one
window is a 512x512 image). The input image is drawn here (smooth gradients and discs, so the PNG is
small) and stored as a PNG; the Swift test reads that PNG, so both sides start from the same bytes.

diffusers' img2img *samples* the VAE's latent distribution; the upscaler takes its mean. To compare the
rest of the pipeline exactly, the reference encodes the image itself (mean x scaling_factor) and passes
those latents as ``image`` (diffusers uses a 4-channel ``image`` as the initial latents as they are).

    . /work/.venv-ref/bin/activate
    python tools/reference/make_img2img_fixtures.py      # writes Tests/Fixtures/golden/tiny-pano/img2img_*

Outputs: img2img_input.png; img2img_<run>.safetensors with ``encoded`` (mean x sf), ``noised`` (the
latents the first denoising step sees), ``final_latent``, ``timesteps`` and
(first run only) ``image_u8`` ([H, W, 3]).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import make_fixtures as mf  # noqa: E402

from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline  # noqa: E402

PROMPT = "snowy mountains at sunset"
GUIDANCE = 7.5
SEED = 4321
SIZE = 512
# name -> (steps, strength, eta)
RUNS = {
    "img2img_s050": (8, 0.5, 0.0),
    "img2img_s035": (10, 0.35, 0.0),
}


def make_image(size):
    """A smooth synthetic picture: sky gradient, a sun, two hills. Deterministic, compresses well."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    img = np.zeros((size, size, 3))
    img[..., 0] = 0.9 - 0.5 * y
    img[..., 1] = 0.6 - 0.3 * y + 0.1 * x
    img[..., 2] = 0.95 - 0.6 * y
    sun = (x - 0.7) ** 2 + (y - 0.25) ** 2 < 0.01
    img[sun] = [1.0, 0.85, 0.4]
    hill = y > 0.65 + 0.1 * np.sin(6 * x)
    img[hill] = np.stack([0.2 + 0.1 * x, 0.45 - 0.2 * y, 0.2 + 0 * x], -1)[hill]
    return Image.fromarray(np.clip(np.round(img * 255), 0, 255).astype(np.uint8))


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    model = os.path.join(args.out, "models", "tiny-pano")
    out_dir = os.path.join(args.out, "golden", "tiny-pano")
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    image = make_image(SIZE)
    png = os.path.join(out_dir, "img2img_input.png")
    image.save(png, optimize=True)
    image = Image.open(png).convert("RGB")
    x = pipe.image_processor.preprocess(image)  # [1, 3, H, W] in [-1, 1]
    encoded = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
    summary = {}
    for name, (steps, strength, eta) in RUNS.items():
        seen = {}

        def on_step(p, i, t, kw):
            seen.setdefault("timesteps", []).append(int(t))
            return {}

        orig = type(pipe).prepare_latents

        def prepare(*a, **k):
            lat = orig(pipe, *a, **k)
            seen["noised"] = lat.clone()
            return lat

        pipe.prepare_latents = prepare
        final = pipe(prompt=PROMPT, image=encoded, strength=strength, num_inference_steps=steps,
                     guidance_scale=GUIDANCE, eta=eta, generator=torch.Generator("cpu").manual_seed(SEED),
                     output_type="latent", callback_on_step_end=on_step).images
        del pipe.prepare_latents
        decoded = pipe.vae.decode(final / pipe.vae.config.scaling_factor).sample
        img = pipe.image_processor.postprocess(decoded, output_type="np")[0]
        u8 = np.round(img.astype(np.float32) * np.float32(255)).astype(np.uint8)
        tensors = {
            "encoded": mf.f32(encoded), "noised": mf.f32(seen["noised"]), "final_latent": mf.f32(final),
            "timesteps": torch.tensor(seen["timesteps"], dtype=torch.int64),
        }
        if name == "img2img_s050":  # one decoded image is enough (0.8 MB each)
            tensors["image_u8"] = torch.from_numpy(np.ascontiguousarray(u8))
        mf.save_tensors(os.path.join(out_dir, f"{name}.safetensors"), tensors)
        summary[name] = dict(steps=steps, strength=strength, eta=eta, seed=SEED, prompt=PROMPT,
                             guidance=GUIDANCE, timesteps=seen["timesteps"])
        print(name, summary[name])
    with open(os.path.join(out_dir, "img2img.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
