#!/usr/bin/env python3
"""Region-based MultiDiffusion ("compose") fixtures for the Swift parity tests.

A small, self-contained reference of MultiDiffusion's region-based generation (Bar-Tal et al. 2023, the
algorithm of the paper's ``region_based.py``), written directly on diffusers components (UNet, VAE, CLIP text
encoder, DDIMScheduler) rather than through a pipeline, with every choice pinned so the Swift renderer can be
compared on final latents:

* canvas 512x1024 px (latent 64x128), window 64x64 latent, stride 16 -> 5 views along the width;
* prompt 0 is the background, prompts 1.. are foregrounds with pixel rectangles; a foreground's latent mask is
  1 where the latent pixel's centre (8j+4, 8i+4) lies inside its rectangle (= PIL NEAREST downscale by 8);
  background mask = clamp(1 - sum(foreground masks), 0); fusion weight = mask_k * weight_k;
* in every view only the prompts whose mask touches the view are denoised (one UNet pass with CFG each);
  per-view DDIM (eta 0) steps are fused as sum(w * x_new) / sum(w) (where the sum of weights is > 0);
* bootstrapping (first ``bootstrap_steps`` steps): a foreground's view latents outside its mask are replaced by
  a noised constant-colour background latent (colour drawn with torch.rand, VAE-encoded);
* random numbers come from ONE torch CPU generator seeded 2024, in this order: initial latents randn(1,4,64,128),
  then (bootstrap runs only) colours rand(bootstrap_steps, K_fg, 3), then the bootstrap noise randn(1,4,64,128).

Uses the committed random-weight model ``Tests/Fixtures/models/tiny-pano``.

    . /work/.venv-ref/bin/activate
    python tools/reference/make_compose_fixtures.py                     # writes Tests/Fixtures/golden/tiny-pano/compose*
    python tools/reference/make_compose_fixtures.py --check-panorama    # also cross-checks the loop (not written)

``--check-panorama`` runs this loop with a single full-canvas prompt and compares it with diffusers'
StableDiffusionPanoramaPipeline (same seed, views patched to stride 16); nothing is written for it.

Outputs (in <out>/golden/tiny-pano/):
    compose_plain.safetensors       bootstrap_steps = 0: initial_latent, final_latent (1,4,64,128),
                                    masks (3,64,128) (bg, fg1, fg2), image_u8 [512, 1024, 3]
    compose_bootstrap.safetensors   bootstrap_steps = 3: initial_latent, final_latent, colours (3,2,3),
                                    background_latents (3,2,4), boot_noise (1,4,64,128)
    compose.json                    settings, timesteps, denoises per step, prompt indices per view
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

HEIGHT, WIDTH = 512, 1024
WINDOW, STRIDE = 64, 16           # latent units
STEPS = 8
ETA = 0.0
SEED = 2024
BOOT_SIZE = 128                   # pixel side of the constant-colour image encoded for a bootstrap background
# index 0 = background (no rect), then foregrounds in order; rect = (x, y, w, h) in pixels
PROMPTS = [
    dict(prompt="a sunny sky", negative="", guidance=7.5, weight=1.0, rect=None),
    dict(prompt="a calm sea", negative="", guidance=7.5, weight=1.0, rect=(0, 0, 384, 512)),
    dict(prompt="snowy mountains", negative="fog", guidance=5.0, weight=2.0, rect=(640, 128, 384, 256)),
]
RUNS = {"compose_plain": 0, "compose_bootstrap": 3}   # name -> bootstrap_steps


def latent_views(lat_h, lat_w):
    """(row0, row1, col0, col1) windows of WINDOW latents every STRIDE, row-major (here a single row)."""
    rows = range(0, lat_h - WINDOW + 1, STRIDE)
    cols = range(0, lat_w - WINDOW + 1, STRIDE)
    return [(r, r + WINDOW, c, c + WINDOW) for r in rows for c in cols]


def region_masks(lat_h, lat_w):
    """[K, lat_h, lat_w] float32 binary masks: background first, then one per foreground rect."""
    centre_y = (8 * torch.arange(lat_h) + 4).view(-1, 1)
    centre_x = (8 * torch.arange(lat_w) + 4).view(1, -1)
    fg = []
    for p in PROMPTS[1:]:
        x, y, w, h = p["rect"]
        inside = (centre_x >= x) & (centre_x < x + w) & (centre_y >= y) & (centre_y < y + h)
        fg.append(inside.to(torch.float32))
    fg = torch.stack(fg)
    bg = (1 - fg.sum(0)).clamp(min=0)
    return torch.cat([bg[None], fg])


def embed(pipe, text):
    ids = pipe.tokenizer(text, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    return pipe.text_encoder(ids)[0]


def background_latent(pipe, colour):
    """4 centre-latent values of the VAE mean of a constant image of `colour` (RGB in [0, 1]) x scaling."""
    image = (colour * 2 - 1).view(1, 3, 1, 1).expand(1, 3, BOOT_SIZE, BOOT_SIZE).contiguous()
    mean = pipe.vae.encode(image).latent_dist.mean
    c = BOOT_SIZE // 16  # centre of the BOOT_SIZE/8 latent
    return mean[0, :, c, c] * pipe.vae.config.scaling_factor


def guided_eps(unet, x, t, uncond, cond, guidance):
    if guidance <= 1:
        return unet(x, t, encoder_hidden_states=cond).sample
    eps_u, eps_c = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


def compose(pipe, scheduler, prompts, masks, views, bootstrap_steps, seed):
    """Runs region-based MultiDiffusion; returns the dict of tensors + bookkeeping."""
    lat_h, lat_w = masks.shape[1:]
    conds = [embed(pipe, p["prompt"]) for p in prompts]
    unconds = [embed(pipe, p["negative"]) for p in prompts]
    weights = masks * torch.tensor([p["weight"] for p in prompts]).view(-1, 1, 1)
    k_fg = len(prompts) - 1

    g = torch.Generator("cpu").manual_seed(seed)
    latents = torch.randn((1, 4, lat_h, lat_w), generator=g) * scheduler.init_noise_sigma
    initial = latents.clone()
    out = {"initial_latent": initial}
    if bootstrap_steps > 0:
        colours = torch.rand((bootstrap_steps, k_fg, 3), generator=g)
        boot_noise = torch.randn((1, 4, lat_h, lat_w), generator=g)
        bg_values = torch.stack([torch.stack([background_latent(pipe, colours[s, k]) for k in range(k_fg)])
                                 for s in range(bootstrap_steps)])  # (steps, K_fg, 4)
        out.update(colours=colours, background_latents=bg_values, boot_noise=boot_noise)

    # prompts touching each view (fixed across steps)
    per_view = [[k for k in range(len(prompts)) if bool((masks[k, r0:r1, c0:c1] > 0).any())]
                for (r0, r1, c0, c1) in views]
    denoises = []
    for s, t in enumerate(scheduler.timesteps):
        value = torch.zeros_like(latents)
        count = torch.zeros((1, 1, lat_h, lat_w))
        n = 0
        for (r0, r1, c0, c1), ks in zip(views, per_view):
            for k in ks:
                x = latents[:, :, r0:r1, c0:c1]
                if s < bootstrap_steps and k >= 1:
                    bg = bg_values[s, k - 1].view(1, 4, 1, 1).expand(1, 4, r1 - r0, c1 - c0).contiguous()
                    bg_noised = scheduler.add_noise(bg, boot_noise[:, :, r0:r1, c0:c1], t)
                    mk = masks[k, r0:r1, c0:c1].view(1, 1, r1 - r0, c1 - c0)
                    x = x * mk + bg_noised * (1 - mk)
                eps = guided_eps(pipe.unet, x, t, unconds[k], conds[k], prompts[k]["guidance"])
                x_new = scheduler.step(eps, t, x, eta=ETA).prev_sample
                w = weights[k, r0:r1, c0:c1].view(1, 1, r1 - r0, c1 - c0)
                value[:, :, r0:r1, c0:c1] += w * x_new
                count[:, :, r0:r1, c0:c1] += w
                n += 1
        latents = torch.where(count > 0, value / count, value)
        denoises.append(n)
    out["final_latent"] = latents
    return out, per_view, denoises


def check_panorama(pipe, scheduler, views):
    """Single full-canvas prompt through compose() vs diffusers' panorama pipeline (stride patched to 16)."""
    from diffusers import StableDiffusionPanoramaPipeline
    pano = StableDiffusionPanoramaPipeline(**{k: v for k, v in pipe.components.items()}).to("cpu")
    pano.scheduler = DDIMScheduler.from_config(scheduler.config)
    pano.set_progress_bar_config(disable=True)
    orig = pano.get_views
    pano.get_views = lambda h, w, **kw: orig(h, w, window_size=WINDOW, stride=STRIDE,
                                             circular_padding=kw.get("circular_padding", False))
    p = dict(PROMPTS[0])
    ref = pano(prompt=p["prompt"], negative_prompt=p["negative"], height=HEIGHT, width=WIDTH,
               num_inference_steps=STEPS, guidance_scale=p["guidance"], eta=ETA, view_batch_size=1,
               generator=torch.Generator("cpu").manual_seed(SEED), output_type="latent").images
    full = torch.ones((1, HEIGHT // 8, WIDTH // 8))
    mine, _, _ = compose(pipe, scheduler, [p], full, views, 0, SEED)
    diff = (mine["final_latent"] - ref).abs().max().item()
    print(f"panorama cross-check (1 prompt, stride {STRIDE}): max |diff| = {diff:.3e}, "
          f"bit-exact = {torch.equal(mine['final_latent'], ref)}")


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures"))
    ap.add_argument("--check-panorama", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = os.path.join(args.out, "models", "tiny-pano")
    out_dir = os.path.join(args.out, "golden", "tiny-pano")
    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(STEPS)
    timesteps = [int(t) for t in scheduler.timesteps]

    lat_h, lat_w = HEIGHT // 8, WIDTH // 8
    views = latent_views(lat_h, lat_w)
    masks = region_masks(lat_h, lat_w)
    summary = dict(height=HEIGHT, width=WIDTH, latent=[lat_h, lat_w], window=WINDOW, stride=STRIDE,
                   views=[list(v) for v in views], steps=STEPS, eta=ETA, seed=SEED, timesteps=timesteps,
                   scheduler="DDIMScheduler", init_noise_sigma=float(scheduler.init_noise_sigma),
                   bootstrap_image_size=BOOT_SIZE,
                   prompts=[dict(p, rect=list(p["rect"]) if p["rect"] else None) for p in PROMPTS],
                   mask_sums=[int(m.sum()) for m in masks], runs={})
    for name, boot in RUNS.items():
        res, per_view, denoises = compose(pipe, scheduler, PROMPTS, masks, views, boot, SEED)
        tensors = {k: mf.f32(v) for k, v in res.items()}
        if boot == 0:
            tensors["masks"] = mf.f32(masks)
            decoded = pipe.vae.decode(res["final_latent"] / pipe.vae.config.scaling_factor).sample
            img = pipe.image_processor.postprocess(decoded, output_type="np")[0]
            u8 = np.round(img.astype(np.float32) * np.float32(255)).astype(np.uint8)
            tensors["image_u8"] = torch.from_numpy(np.ascontiguousarray(u8))
        info = mf.save_tensors(os.path.join(out_dir, f"{name}.safetensors"), tensors)
        assert len(set(denoises)) == 1, denoises
        summary["runs"][name] = dict(bootstrap_steps=boot, denoises_per_step=denoises[0],
                                     prompts_per_view=per_view, tensors=info)
        summary["denoises_per_step"] = denoises[0]
        summary["prompts_per_view"] = per_view
        print(f"{name}: bootstrap_steps={boot} denoises/step={denoises[0]} prompts/view={per_view} "
              f"max|final|={res['final_latent'].abs().max().item():.6f}")
    with open(os.path.join(out_dir, "compose.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print("timesteps", timesteps, "mask sums", summary["mask_sums"])
    if args.check_panorama:
        check_panorama(pipe, scheduler, views)


if __name__ == "__main__":
    main()
