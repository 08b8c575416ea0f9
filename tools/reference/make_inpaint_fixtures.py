#!/usr/bin/env python3
"""Inpainting fixtures (diffusers StableDiffusionInpaintPipeline, DDIM) and the tiny 9-channel model.

Writes ``Tests/Fixtures/models/tiny-inpaint``: a random-weight inpainting UNet (in_channels 9 = 4 latent +
1 mask + 4 masked-image latents; tiny-pano's architecture at half the width and sample_size 32, so one
window is a 256x256 image and the file stays small); text encoder, tokenizer, VAE and scheduler are
symlinks to tiny-pano's, as tiny-lcm does it.

Runs, each at one window of its model (DDIM, 8 steps, eta 0, guidance 7.5, seed 4321):

    unet4_s100, unet4_s060   tiny-pano (4-channel UNet: known region re-noised and blended every step), 512x512
    unet9_s100, unet9_s060   tiny-inpaint (9-channel UNet: mask and masked-image latents concatenated), 256x256

The input image (the img2img picture) and the mask are drawn here and stored as PNGs; the Swift tests
read those PNGs, so both sides start from the same bytes. The mask is an ellipse with a soft (linear
ramp) edge, so diffusers' binarisation at 0.5 matters, placed off the 8-pixel grid so the nearest-
neighbour reduction to latent size matters too.

Noise draw order: diffusers *samples* the VAE's latent distributions with the pipeline's generator
(``retrieve_latents(..., sample_mode="sample")``), which shifts the generator before the initial noise is
drawn. panorama takes the distributions' mean (as its img2img does). This script replaces the pipeline
module's ``retrieve_latents`` with one that returns the mean (``sample_mode="argmax"``), so the first
``torch.randn`` on the generator is the initial noise, as ``TorchGenerator(seed:)`` draws it.

Mask blur: AUTOMATIC1111's img2img blurs the (binary) mask with ``cv2.GaussianBlur`` on uint8, a horizontal
pass with kernel size 2*int(2.5*r + 0.5) + 1 and sigma r, then a vertical one (modules/processing.py,
StableDiffusionProcessingImg2Img.init). OpenCV is not in the reference environment, so the reference here
is that blur written in numpy (float64 Gaussian kernel as cv2.getGaussianKernel builds it, BORDER_REFLECT_101,
rounded to uint8 after each pass); cv2's fixed-point uint8 path can differ from it by one level.

    . /work/.venv-ref/bin/activate
    python tools/reference/make_inpaint_fixtures.py     # writes Tests/Fixtures/golden/inpaint/, models/tiny-inpaint

Outputs (Tests/Fixtures/golden/inpaint/): input_512.png, mask_512.png, input_256.png, mask_256.png;
<run>.safetensors with ``final_latent`` (output_type="latent"), ``timesteps``, ``image_u8`` (the decoded
image, uint8 [128, 128, 3]: rows and columns 192..<320 of the 512x512 runs, 64..<192 of the 256x256 ones);
the strength-1 runs also ``latent_mask`` [1,1,h,w], ``image_latents`` (mean x sf of the image) and, for
the 9-channel model, ``masked_image_latents``; the strength-0.6 runs ``initial`` (the latents the first
step sees). blur.safetensors: ``blur_r4``, ``blur_r1_5`` (uint8 [128, 128], rows and columns 64..<192 of
the A1111 blur of mask_256.png at radius 4 and 1.5); inpaint.json: the settings.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import make_fixtures as mf  # noqa: E402
from make_img2img_fixtures import make_image  # noqa: E402

import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint as inpaint_module  # noqa: E402
from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel  # noqa: E402

PROMPT = "snowy mountains at sunset"
GUIDANCE = 7.5
SEED = 4321
STEPS = 8
CROPS = {512: (192, 320), 256: (64, 192)}  # rows and columns of the decoded images that are stored
RUNS = {  # name -> (model, size, strength)
    "unet4_s100": ("tiny-pano", 512, 1.0),
    "unet4_s060": ("tiny-pano", 512, 0.6),
    "unet9_s100": ("tiny-inpaint", 256, 1.0),
    "unet9_s060": ("tiny-inpaint", 256, 0.6),
}
BLUR_RADII = {"blur_r4": 4.0, "blur_r1_5": 1.5}


def mean_latents(encoder_output, generator=None, sample_mode="sample"):
    """retrieve_latents with sample_mode="argmax": the distribution's mean, no generator draw."""
    return encoder_output.latent_dist.mode()


def make_tiny_inpaint(fixtures):
    src, dst = os.path.join(fixtures, "models/tiny-pano"), os.path.join(fixtures, "models/tiny-inpaint")
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.makedirs(dst)
    for part in ("text_encoder", "tokenizer", "vae", "scheduler"):
        os.symlink(os.path.join("..", "tiny-pano", part), os.path.join(dst, part))
    with open(os.path.join(src, "unet/config.json")) as f:
        config = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    config.update(in_channels=9, block_out_channels=[16, 32], norm_num_groups=8, sample_size=32)
    torch.manual_seed(2309)
    unet = UNet2DConditionModel(**config).eval()
    mf.perturb_constant_params(unet, 2310)
    unet.to(torch.float16).save_pretrained(os.path.join(dst, "unet"))  # half the file; loaded back as float32
    with open(os.path.join(src, "model_index.json")) as f:
        index = json.load(f)
    index["_class_name"] = "StableDiffusionInpaintPipeline"
    with open(os.path.join(dst, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return dst


def make_mask(size):
    """An off-grid ellipse, 1 inside, falling linearly to 0 over a 20-pixel edge."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    r = np.sqrt(((x - 0.53) / 0.27) ** 2 + ((y - 0.46) / 0.19) ** 2)
    ramp = 20.0 / size / 0.23
    m = np.clip((1 - r) / ramp + 0.5, 0, 1)
    return Image.fromarray(np.round(m * 255).astype(np.uint8), mode="L")


def gaussian_kernel(size, sigma):
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-x * x / (2 * sigma * sigma))
    return k / k.sum()


def blur_pass(a, kernel, axis):
    """One separable pass on uint8, BORDER_REFLECT_101 (cv2's default), rounded to uint8."""
    half = len(kernel) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (half, half)
    p = np.pad(a.astype(np.float64), pad, mode="reflect")  # numpy "reflect" = cv2 REFLECT_101
    out = np.zeros(a.shape, dtype=np.float64)
    n = a.shape[axis]
    for i, k in enumerate(kernel):
        out += k * (p[:, i:i + n] if axis == 1 else p[i:i + n, :])
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def a1111_mask_blur(mask_u8, radius):
    size = 2 * int(2.5 * radius + 0.5) + 1
    k = gaussian_kernel(size, radius)
    return blur_pass(blur_pass(mask_u8, k, axis=1), k, axis=0)


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    make_tiny_inpaint(args.out)
    out_dir = os.path.join(args.out, "golden", "inpaint")
    os.makedirs(out_dir, exist_ok=True)
    inpaint_module.retrieve_latents = mean_latents

    for size in (512, 256):
        make_image(size).save(os.path.join(out_dir, f"input_{size}.png"), optimize=True)
        make_mask(size).save(os.path.join(out_dir, f"mask_{size}.png"), optimize=True)

    mask256 = np.array(Image.open(os.path.join(out_dir, "mask_256.png")))
    lo, hi = CROPS[256]
    blur = {key: torch.from_numpy(np.ascontiguousarray(a1111_mask_blur(mask256, r)[lo:hi, lo:hi]))
            for key, r in BLUR_RADII.items()}
    mf.save_tensors(os.path.join(out_dir, "blur.safetensors"), blur)

    summary = {"prompt": PROMPT, "guidance": GUIDANCE, "seed": SEED, "steps": STEPS, "sampler": "ddim", "eta": 0.0,
               "blur_radii": BLUR_RADII, "image_u8_crops": {str(k): list(v) for k, v in CROPS.items()}, "runs": {}}
    pipes = {}
    for name, (model, size, strength) in RUNS.items():
        if model not in pipes:
            pipe = StableDiffusionInpaintPipeline.from_pretrained(os.path.join(args.out, "models", model),
                                                                  torch_dtype=torch.float32, safety_checker=None,
                                                                  requires_safety_checker=False)
            assert all(p.dtype == torch.float32 for p in pipe.unet.parameters())
            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
            pipe.set_progress_bar_config(disable=True)
            pipes[model] = pipe
        pipe = pipes[model]
        image = Image.open(os.path.join(out_dir, f"input_{size}.png")).convert("RGB")
        mask = Image.open(os.path.join(out_dir, f"mask_{size}.png"))
        seen = {}

        def on_step(p, i, t, kw):
            seen.setdefault("timesteps", []).append(int(t))
            return {}

        orig_latents = type(pipe).prepare_latents
        orig_masks = type(pipe).prepare_mask_latents

        def prepare(*a, **k):
            out = orig_latents(pipe, *a, **k)
            seen["initial"] = out[0].clone()
            return out

        def prepare_masks(*a, **k):
            m, masked = orig_masks(pipe, *a, **k)
            seen["latent_mask"], seen["masked_image_latents"] = m[:1].clone(), masked[:1].clone()
            return m, masked

        pipe.prepare_latents, pipe.prepare_mask_latents = prepare, prepare_masks
        final = pipe(prompt=PROMPT, image=image, mask_image=mask, height=size, width=size, strength=strength,
                     num_inference_steps=STEPS, guidance_scale=GUIDANCE, eta=0.0,
                     generator=torch.Generator("cpu").manual_seed(SEED), output_type="latent",
                     callback_on_step_end=on_step).images
        del pipe.prepare_latents, pipe.prepare_mask_latents
        x = pipe.image_processor.preprocess(image)
        image_latents = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
        decoded = pipe.vae.decode(final / pipe.vae.config.scaling_factor).sample
        img = pipe.image_processor.postprocess(decoded, output_type="np")[0]
        u8 = np.round(img.astype(np.float32) * np.float32(255)).astype(np.uint8)
        lo, hi = CROPS[size]
        tensors = {
            "final_latent": mf.f32(final), "timesteps": torch.tensor(seen["timesteps"], dtype=torch.int64),
            "image_u8": torch.from_numpy(np.ascontiguousarray(u8[lo:hi, lo:hi])),
        }
        if strength < 1:  # at strength 1 the start is the seed's noise
            tensors["initial"] = mf.f32(seen["initial"])
        else:  # what the image gives, once per model
            tensors.update(latent_mask=mf.f32(seen["latent_mask"]), image_latents=mf.f32(image_latents))
            if model == "tiny-inpaint":
                tensors["masked_image_latents"] = mf.f32(seen["masked_image_latents"])
        mf.save_tensors(os.path.join(out_dir, f"{name}.safetensors"), tensors)
        summary["runs"][name] = dict(model=model, size=size, strength=strength, timesteps=seen["timesteps"],
                                     final_max_abs=float(final.abs().max()))
        print(name, summary["runs"][name])
    with open(os.path.join(out_dir, "inpaint.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
