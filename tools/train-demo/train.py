#!/usr/bin/env python3
"""Train the small landscape Stable-Diffusion model on CPU, stage by stage.

    python train.py vae       # AutoencoderKL on random crops of generated landscapes
    python train.py latents   # encode many generated panoramas with the trained VAE
    python train.py unet      # CLIPTextModel + UNet2DConditionModel on random 64x64 latent windows
    python train.py export    # fp16 diffusers folder -> models/landscape-demo/ (+ load/generate check)

Every stage resumes from its latest checkpoint under --ckpt-dir (default checkpoints/ next to this
script) and returns at once when it is already finished (a `<stage>.done` marker). Stages stop
after --steps or --minutes (total over resumes), whichever comes first. `--smoke` runs a few
iterations of everything in checkpoints/smoke/ (export to checkpoints/smoke/export/).
"""

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import configs  # noqa: E402
import landscapes  # noqa: E402

SAMPLE_PROMPTS = [
    "snowy mountains at sunset",
    "a calm sea under a starry night sky",
    "desert dunes at noon",
    "rolling green hills at dawn",
]


# ---------------------------------------------------------------------------------------------
# helpers

def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def atomic_save(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_json(path, default=None):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return default


def write_json(obj, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def record_stage(args, stage, **info):
    path = os.path.join(args.ckpt_dir, "stages.json")
    st = read_json(path, {})
    st.setdefault(stage, {}).update(info)
    write_json(st, path)


def done_path(args, stage):
    return os.path.join(args.ckpt_dir, f"{stage}.done")


def is_done(args, stage):
    return os.path.exists(done_path(args, stage))


def mark_done(args, stage):
    with open(done_path(args, stage), "w") as f:
        f.write(time.strftime("%Y-%m-%d %H:%M:%S\n"))


def get_image(args, index, max_width=None):
    """Generated landscape `index` (uint8 HxWx3), cached as PNG under ckpt_dir/data/."""
    from PIL import Image
    d = os.path.join(args.ckpt_dir, "data")
    os.makedirs(d, exist_ok=True)
    tag = "" if max_width is None else f"_w{max_width}"
    path = os.path.join(d, f"img_{index:05d}{tag}.png")
    if os.path.exists(path):
        return np.asarray(Image.open(path).convert("RGB"))
    img, _, _ = landscapes.generate(index, args.seed, max_width=max_width)
    Image.fromarray(img).save(path + ".tmp.png")
    os.replace(path + ".tmp.png", path)
    return img


def to_tensor(img):
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_uint8(x):
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def save_png(arr, path):
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def lr_factor(step, progress, warmup, final=0.1):
    w = min(1.0, (step + 1) / warmup)
    return w * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Budget:
    """Steps and wall-clock minutes, accumulated over resumes."""

    def __init__(self, steps, minutes, elapsed0):
        self.steps, self.minutes, self.elapsed0, self.t0 = steps, minutes, elapsed0, time.time()

    def elapsed(self):
        return self.elapsed0 + time.time() - self.t0

    def progress(self, step):
        p = step / self.steps if self.steps else 0.0
        if self.minutes:
            p = max(p, self.elapsed() / (60 * self.minutes))
        return p

    def finished(self, step):
        return self.progress(step) >= 1.0


def vae_model():
    from diffusers import AutoencoderKL
    return AutoencoderKL(**configs.VAE)


def make_tokenizer(args):
    from transformers import CLIPTokenizer
    # transformers 5 takes `vocab` / `merges`; the old `vocab_file` / `merges_file` names are
    # silently ignored and give an empty vocabulary (every word -> id 2), which trained the
    # first UNet run unconditionally. The check below makes that mistake impossible.
    tok = CLIPTokenizer(vocab=os.path.join(args.vocab_dir, "vocab.json"),
                        merges=os.path.join(args.vocab_dir, "merges.txt"),
                        pad_token="<|endoftext|>", model_max_length=configs.MAX_TOKENS)
    ids = tok("snowy mountains at sunset").input_ids
    if ids != [49406, 14191, 5873, 536, 3424, 49407]:
        raise SystemExit(f"tokenizer from {args.vocab_dir} is not the CLIP BPE vocabulary: {ids}")
    return tok


def tokenize(tok, texts):
    return tok(texts, padding="max_length", truncation=True, max_length=configs.MAX_TOKENS,
               return_tensors="pt").input_ids


# ---------------------------------------------------------------------------------------------
# stage 1: VAE

def random_crops(rng, count, crop, images, pick, scale_p):
    """`count` random crops (random horizontal flips) as a batch; `pick(i, s)` is image i at scale
    index s, drawn with probabilities `scale_p`. Multi-scale: at scale 1/4 a crop holds the whole
    height of a landscape (sky to ground, as the decoder sees it in a panorama), at scale 1 the
    fine detail."""
    crops = []
    for _ in range(count):
        img = pick(int(rng.integers(images)), int(rng.choice(len(scale_p), p=scale_p)))
        y0 = rng.integers(0, img.shape[0] - crop + 1)
        x0 = rng.integers(0, img.shape[1] - crop + 1)
        cr = img[y0:y0 + crop, x0:x0 + crop]
        if rng.uniform() < 0.5:
            cr = cr[:, ::-1]
        crops.append(to_tensor(cr))
    return torch.stack(crops)


def optimise(opt, loss, params, lr):
    """One AdamW step on `loss` at learning rate `lr`, gradients clipped to norm 1."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def reconstruction_errors(rec, x):
    """L1 of the pixels, and L1 of their horizontal and vertical differences."""
    l1 = (rec - x).abs().mean()
    gx = ((rec[..., 1:] - rec[..., :-1]) - (x[..., 1:] - x[..., :-1])).abs().mean()
    gy = ((rec[..., 1:, :] - rec[..., :-1, :]) - (x[..., 1:, :] - x[..., :-1, :])).abs().mean()
    return l1, gx, gy


def vae_from_model(args, stage, folder):
    """The vae and decoder stages of a run that continues an exported model (--from-model): its VAE,
    in float32, is both stages' result. Its latent normalisation is already folded in, so the
    latents stage records the measured one but applies (and the export folds) none."""
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(os.path.join(args.from_model, "vae"), torch_dtype=torch.float32)
    vae.save_pretrained(os.path.join(args.ckpt_dir, folder))
    record_stage(args, stage, from_model=os.path.abspath(args.from_model), images=args.vae_pool)
    mark_done(args, stage)
    log(f"{stage}: the VAE of {args.from_model}")


def stage_vae(args):
    if is_done(args, "vae"):
        log("vae: already done")
        return
    if args.from_model:
        return vae_from_model(args, "vae", "vae_final")
    torch.manual_seed(args.seed)
    vae = vae_model()
    with torch.no_grad():
        # start with a nearly deterministic posterior (std ~0.05): with the default std 1 the
        # decoder first learns to ignore the noisy latent and training stalls for many steps
        lc = configs.VAE["latent_channels"]
        vae.quant_conv.bias[lc:].fill_(-6.0)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    ck = os.path.join(args.ckpt_dir, "vae.pt")
    step, elapsed0, pool_n, hist = 0, 0.0, 0, []
    if os.path.exists(ck):
        st = torch.load(ck, map_location="cpu", weights_only=False)
        vae.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, elapsed0, pool_n, hist = st["step"], st["elapsed"], st["pool_n"], st["hist"]
        log(f"vae: resumed at step {step} ({elapsed0 / 60:.1f} min)")
    n_params = sum(p.numel() for p in vae.parameters())
    log(f"vae: {n_params / 1e6:.2f} M params; crop {args.vae_crop}, batch {args.vae_batch}")
    budget = Budget(args.vae_steps, args.vae_minutes, elapsed0)
    scales = [1, 2, 4]
    scale_p = np.array(args.vae_scale_p, dtype=np.float64)
    scale_p /= scale_p.sum()

    def pyramid(img):
        from PIL import Image
        im = Image.fromarray(img)
        return [img] + [np.asarray(im.resize((img.shape[1] // s, img.shape[0] // s), Image.BOX))
                        for s in scales[1:]]

    pool = [pyramid(get_image(args, i)) for i in range(max(pool_n, args.vae_pool_start))]
    last_ck = last_sample = time.time()
    run = []
    vae.train()
    while not budget.finished(step):
        if len(pool) < args.vae_pool and step % args.vae_add_every == 0:
            pool.append(pyramid(get_image(args, len(pool))))
        rng = np.random.default_rng([args.seed, 1, step])
        x = random_crops(rng, args.vae_batch, args.vae_crop, len(pool), lambda i, s: pool[i][s], scale_p)
        torch.manual_seed(args.seed * 1000003 + step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16)):
            post = vae.encode(x).latent_dist
            z = post.sample()
            rec = vae.decode(z).sample.float()
        l1, gx, gy = reconstruction_errors(rec, x)
        mu, logvar = post.mean.float(), post.logvar.float()
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1.0 - logvar).mean()
        loss = l1 + 0.5 * (gx + gy) + args.vae_kl * kl
        if args.vae_mse:  # L1 alone lets the decoder dull rare bright colours (snow); MSE weighs them
            loss = loss + args.vae_mse * ((rec - x) ** 2).mean()
        optimise(opt, loss, vae.parameters(), args.vae_lr * lr_factor(step, budget.progress(step), 50))
        step += 1
        run.append([l1.item(), (gx + gy).item(), kl.item()])
        if step % args.log_every == 0:
            m = np.mean(run, 0)
            hist.append([step, *m.tolist()])
            log(f"vae step {step} l1 {m[0]:.4f} grad {m[1]:.4f} kl {m[2]:.3f} lr {opt.param_groups[0]['lr']:.2e} "
                f"pool {len(pool)} elapsed {budget.elapsed() / 60:.1f} min")
            run = []
        now = time.time()
        if now - last_sample > 60 * args.sample_minutes:
            vae_reconstruction(args, vae, f"vae_step{step:06d}.png")
            last_sample = time.time()
        if now - last_ck > 60 * args.ckpt_minutes or budget.finished(step):
            atomic_save(dict(model=vae.state_dict(), opt=opt.state_dict(), step=step,
                             elapsed=budget.elapsed(), pool_n=len(pool), hist=hist), ck)
            last_ck = time.time()
    atomic_save(dict(model=vae.state_dict(), opt=opt.state_dict(), step=step,
                     elapsed=budget.elapsed(), pool_n=len(pool), hist=hist), ck)
    vae.eval()
    vae.save_pretrained(os.path.join(args.ckpt_dir, "vae_final"))
    vae_reconstruction(args, vae, "vae_final.png")
    last = hist[-1] if hist else None
    record_stage(args, "vae", steps=step, minutes=round(budget.elapsed() / 60, 1), params=n_params, mse=args.vae_mse,
                 last_log=last, images=len(pool), crop=args.vae_crop, batch=args.vae_batch)
    mark_done(args, "vae")
    log(f"vae: done, {step} steps, {budget.elapsed() / 60:.1f} min")


@torch.no_grad()
def vae_reconstruction(args, vae, name):
    was = vae.training
    vae.eval()
    img = get_image(args, 1)[:, :1024]
    x = to_tensor(img)[None]
    rec = vae.decode(vae.encode(x).latent_dist.mode()).sample[0]
    out = np.concatenate([img, to_uint8(rec)], 0)
    save_png(out, os.path.join(args.ckpt_dir, "samples", name))
    err = (rec - x[0]).abs().mean().item()
    log(f"vae: reconstruction {name} L1 {err:.4f}")
    vae.train(was)


# ---------------------------------------------------------------------------------------------
# stage 1b: decoder

def white_fraction(img):
    """Share of pixels whose every channel is above 200 (the snow statistic of the model checks)."""
    return float((np.asarray(img).min(-1) > 200).mean())


def stage_decoder(args):
    """Fine-tunes the VAE's decoder (and post_quant_conv) with the encoder frozen, so the latent
    space, and with it the latents and the UNet trained on them, stay valid. The first VAE stage
    leaves bright colours compressed: snow (229, 249, 254) came back as (180, 187, 214), so a
    round trip turned no pixel near-white, and no UNet could draw white snow through it. Same
    crops and loss as the VAE stage plus an MSE term, which weighs those large errors more."""
    if is_done(args, "decoder"):
        log("decoder: already done")
        return
    if args.from_model:
        return vae_from_model(args, "decoder", "vae_decoder_final")
    vae = load_vae_final(args)
    for p in list(vae.encoder.parameters()) + list(vae.quant_conv.parameters()):
        p.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=args.decoder_lr, betas=(0.9, 0.99), weight_decay=0.0)
    ck = os.path.join(args.ckpt_dir, "decoder.pt")
    step, elapsed0, hist, before = 0, 0.0, [], None
    if os.path.exists(ck):
        st = torch.load(ck, map_location="cpu", weights_only=False)
        vae.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, elapsed0, hist, before = st["step"], st["elapsed"], st["hist"], st.get("snow_before")
        log(f"decoder: resumed at step {step} ({elapsed0 / 60:.1f} min)")
    pool_n = read_json(os.path.join(args.ckpt_dir, "stages.json"), {}).get("vae", {}).get("images", args.vae_pool)
    scale_p = np.array(args.vae_scale_p, dtype=np.float64)
    scale_p /= scale_p.sum()
    from PIL import Image
    cache = {}

    def scaled(i, s):
        if (i, s) not in cache:
            img = get_image(args, i)
            cache[(i, s)] = img if s == 1 else np.asarray(
                Image.fromarray(img).resize((img.shape[1] // s, img.shape[0] // s), Image.BOX))
        return cache[(i, s)]

    @torch.no_grad()
    def snow_check():
        # round-trip white fraction of the first snowy scenes at noon, against their own
        vae.eval()
        pairs = []
        for i in range(pool_n):  # scenes the VAE stage rendered (cached)
            a = landscapes.attributes(i, args.seed)
            if a["time"] == "noon" and a["snowy"] and a["terrain"] == "mountains":
                img = get_image(args, i)[:, :512]
                rec = to_uint8(vae.decode(vae.encode(to_tensor(img)[None]).latent_dist.mode()).sample[0])
                pairs.append((white_fraction(img), white_fraction(rec)))
            if len(pairs) == 3:
                break
        vae.train()
        return [round(sum(p[k] for p in pairs) / len(pairs), 4) for k in (0, 1)] if pairs else None

    if before is None:  # measured on the VAE stage's decoder, kept across resumes
        before = snow_check()
    log(f"decoder: {sum(p.numel() for p in params) / 1e6:.2f} M trainable params; "
        f"snow check before (input, round trip): {before}")
    budget = Budget(args.decoder_steps, args.decoder_minutes, elapsed0)  # the check is not training time
    last_ck = time.time()
    run = []
    vae.train()
    vae.encoder.eval()
    while not budget.finished(step):
        rng = np.random.default_rng([args.seed, 7, step])
        x = random_crops(rng, args.decoder_batch, args.vae_crop, pool_n, lambda i, s: scaled(i, (1, 2, 4)[s]), scale_p)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16)):
            rec = vae.decode(z).sample.float()
        l1, gx, gy = reconstruction_errors(rec, x)
        mse = ((rec - x) ** 2).mean()
        loss = l1 + 0.5 * (gx + gy) + args.decoder_mse * mse
        if args.decoder_color:  # colour per 8x8 block (one latent pixel): drift there tints whole areas
            loss = loss + args.decoder_color * (F.avg_pool2d(rec, 8) - F.avg_pool2d(x, 8)).abs().mean()
        optimise(opt, loss, params, args.decoder_lr * lr_factor(step, budget.progress(step), 50))
        step += 1
        run.append([l1.item(), (gx + gy).item(), mse.item()])
        if step % args.log_every == 0:
            m = np.mean(run, 0)
            hist.append([step, *m.tolist()])
            log(f"decoder step {step} l1 {m[0]:.4f} grad {m[1]:.4f} mse {m[2]:.4f} "
                f"lr {opt.param_groups[0]['lr']:.2e} elapsed {budget.elapsed() / 60:.1f} min")
            run = []
        if time.time() - last_ck > 60 * args.ckpt_minutes or budget.finished(step):
            atomic_save(dict(model=vae.state_dict(), opt=opt.state_dict(), step=step,
                             elapsed=budget.elapsed(), hist=hist, snow_before=before), ck)
            last_ck = time.time()
    atomic_save(dict(model=vae.state_dict(), opt=opt.state_dict(), step=step, elapsed=budget.elapsed(), hist=hist,
                     snow_before=before), ck)
    vae.eval()
    after = snow_check()
    log(f"decoder: snow check after (input, round trip): {after}")
    vae.save_pretrained(os.path.join(args.ckpt_dir, "vae_decoder_final"))
    vae_reconstruction(args, vae, "vae_decoder_final.png")
    record_stage(args, "decoder", steps=step, minutes=round(budget.elapsed() / 60, 1), batch=args.decoder_batch,
                 crop=args.vae_crop, lr=args.decoder_lr, mse=args.decoder_mse, color=args.decoder_color, snow_check=after, snow_before=before,
                 last_log=hist[-1] if hist else None)
    mark_done(args, "decoder")
    log(f"decoder: done, {step} steps, {budget.elapsed() / 60:.1f} min")


# ---------------------------------------------------------------------------------------------
# stage 2: latents

def load_vae_final(args, decoder=False):
    """The trained VAE; with `decoder`, the one whose decoder the decoder stage fine-tuned."""
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(os.path.join(args.ckpt_dir, "vae_decoder_final" if decoder else "vae_final"))
    vae.eval()
    return vae


def stage_latents(args):
    if is_done(args, "latents"):
        log("latents: already done")
        return
    vae = load_vae_final(args)
    d = os.path.join(args.ckpt_dir, "latents")
    os.makedirs(d, exist_ok=True)
    stp = os.path.join(d, "state.json")
    st = read_json(stp, dict(next_index=0, shards=0, elapsed=0.0))
    budget = Budget(0, args.latent_minutes, st["elapsed"])
    buf_lat, buf_idx = [], []
    i = st["next_index"]
    vae_pool = read_json(os.path.join(args.ckpt_dir, "stages.json"), {}).get("vae", {}).get("images", 0)

    def flush():
        if not buf_lat:
            return
        path = os.path.join(d, f"shard_{st['shards']:04d}.pt")
        atomic_save(dict(latents=list(buf_lat), indices=list(buf_idx)), path)
        st["shards"] += 1
        st["next_index"] = i
        st["elapsed"] = budget.elapsed()
        write_json(st, stp)
        log(f"latents: shard {path} ({len(buf_lat)} scenes), next index {i}, "
            f"{budget.elapsed() / 60:.1f} min")
        buf_lat.clear()
        buf_idx.clear()

    with torch.no_grad():
        while i < args.latent_scenes and not budget.finished(0):
            # scenes already rendered for the VAE keep their width; new ones are capped for speed
            mw = None if i < vae_pool else args.latent_max_width
            img = get_image(args, i, max_width=mw)
            z = vae.encode(to_tensor(img)[None]).latent_dist.mode()[0]
            buf_lat.append(z.half())
            buf_idx.append(i)
            i += 1
            if len(buf_lat) >= args.latent_shard:
                flush()
        flush()
    # statistics -> scaling factor
    lats = load_latents(args)[0]
    flat = torch.cat([z.float().reshape(4, -1) for z in lats], 1)
    mean, std = flat.mean().item(), flat.std().item()
    stats = dict(mean=mean, std=std, scaling_factor=1.0 / std,
                 channel_mean=flat.mean(1).tolist(), channel_std=flat.std(1).tolist(),
                 scenes=len(lats), latent_pixels=flat.shape[1])
    if args.from_model:
        # the continued UNet learnt on this VAE's latents as they come (their normalisation is
        # folded in already); a second one, measured on other scenes, would shift its input
        stats.update(measured_channel_mean=stats["channel_mean"], measured_channel_std=stats["channel_std"],
                     channel_mean=[0.0] * len(stats["channel_mean"]), channel_std=[1.0] * len(stats["channel_std"]))
    write_json(stats, os.path.join(d, "stats.json"))
    record_stage(args, "latents", minutes=round(budget.elapsed() / 60, 1), scenes=len(lats),
                 scaling_factor=stats["scaling_factor"])
    mark_done(args, "latents")
    log(f"latents: done, {len(lats)} scenes, mean {mean:.3f} std {std:.3f} -> scaling_factor {1 / std:.5f}")


def load_latents(args):
    d = os.path.join(args.ckpt_dir, "latents")
    lats, idx = [], []
    k = 0
    while os.path.exists(os.path.join(d, f"shard_{k:04d}.pt")):
        s = torch.load(os.path.join(d, f"shard_{k:04d}.pt"), map_location="cpu")
        lats += s["latents"]
        idx += s["indices"]
        k += 1
    return lats, idx


def latent_norm(stats):
    """Per-channel mean and std of the VAE's latents: the UNet works on (z - mean) / std."""
    return (torch.tensor(stats["channel_mean"]).view(-1, 1, 1), torch.tensor(stats["channel_std"]).view(-1, 1, 1))


@torch.no_grad()
def fold_latent_norm(vae, mean, std):
    """Makes the VAE's own latents the normalised ones, (z - mean) / std per channel, by folding the
    affine map into quant_conv (encoder side) and post_quant_conv (decoder side); scaling_factor 1.

    The trained latents have channel means far from 0 (up to 0.5 std) and channel stds from 0.2 to 1.6
    after a single global scale. A UNet trained on them reads the image's overall colour from the
    residual signal left in x_T instead of the prompt, and from pure noise draws the data average.
    """
    m, sd = mean.flatten().double(), std.flatten().double()
    n = m.numel()
    q = vae.quant_conv  # [2n, 2n, 1, 1]: mean channels, then log-variance channels
    w, b = q.weight.double(), q.bias.double()
    w[:n] /= sd.view(-1, 1, 1, 1)
    b[:n] = (b[:n] - m) / sd
    b[n:] -= 2 * torch.log(sd)
    q.weight.copy_(w.float())
    q.bias.copy_(b.float())
    pq = vae.post_quant_conv  # [n, n, 1, 1], input z = z' * std + mean
    w, b = pq.weight.double(), pq.bias.double()
    b = b + (w[:, :, 0, 0] * m.view(1, -1)).sum(1)
    w = w * sd.view(1, -1, 1, 1)
    pq.weight.copy_(w.float())
    pq.bias.copy_(b.float())
    vae.register_to_config(scaling_factor=1.0)
    return vae


# ---------------------------------------------------------------------------------------------
# stage 3: UNet + text encoder

def new_unet_and_text(seed):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**configs.UNET)
    te = CLIPTextModel(CLIPTextConfig(**configs.TEXT_ENCODER))
    return unet, te


def train_scheduler():
    from diffusers import DDPMScheduler
    c = {k: v for k, v in configs.SCHEDULER.items() if k not in ("set_alpha_to_one",)}
    return DDPMScheduler(**c)


def stage_unet(args):
    train_unet(args, "unet", steps=args.unet_steps, minutes=args.unet_minutes, lr=args.unet_lr,
               high_noise_share=args.unet_high_noise)


def stage_tune(args):
    """Continues the finished UNet + text encoder (from their EMA weights) with a fresh optimizer and
    learning-rate schedule, drawing a share of the timesteps from the noisiest end, where the
    picture's overall light (night, noon) can only come from the prompt."""
    train_unet(args, "tune", steps=args.tune_steps, minutes=args.tune_minutes, lr=args.tune_lr,
               high_noise_share=args.tune_high_noise, init_from="unet.pt")


def train_unet(args, stage, steps, minutes, lr, high_noise_share, init_from=None):
    if is_done(args, stage):
        log(f"{stage}: already done")
        return
    stats = read_json(os.path.join(args.ckpt_dir, "latents", "stats.json"))
    mu, sd = latent_norm(stats)
    lats, idx = load_latents(args)
    lats = [(z.float() - mu) / sd for z in lats]
    attrs = [landscapes.attributes(i, args.seed) for i in idx]
    caps = [landscapes.captions(a) for a in attrs]
    pick = None  # scene sampling probabilities (None: uniform, the earlier runs' draws)
    if stage == "tune" and args.tune_scene_weight:
        w = np.ones(len(idx))
        for key, val in (kv.split("=") for kv in args.tune_scene_weight):
            if key != "snowy" and key not in landscapes.TERRAINS:
                raise SystemExit(f"--tune-scene-weight {key}={val}: the key is 'snowy' or one of {landscapes.TERRAINS}")
            w *= np.array([float(val) if (a["snowy"] if key == "snowy" else a["terrain"] == key) else 1.0 for a in attrs])
        pick = w / w.sum()
        log(f"{stage}: scene weights {args.tune_scene_weight}")
    tok = make_tokenizer(args)
    all_caps = sorted({c for cs in caps for c in cs} | {""})
    ids_of = dict(zip(all_caps, tokenize(tok, all_caps)))
    log(f"unet: {len(lats)} scenes, {len(all_caps)} distinct captions, latents normalised per channel "
        f"(mean {[round(v, 3) for v in mu.flatten().tolist()]}, std {[round(v, 3) for v in sd.flatten().tolist()]})")

    unet, te = new_unet_and_text(args.seed)
    params = list(unet.parameters()) + list(te.parameters())

    def new_optimizer():
        # The text encoder learns faster and without weight decay: it starts from nothing and must
        # tell captions apart before the UNet's cross-attention can use them.
        return torch.optim.AdamW([
            {"params": list(unet.parameters()), "lr_scale": 1.0, "weight_decay": 0.01},
            {"params": list(te.parameters()), "lr_scale": args.text_lr_scale, "weight_decay": 0.0},
        ], lr=args.unet_lr, betas=(0.9, 0.999))

    opt = new_optimizer()
    ema_u, ema_t = copy.deepcopy(unet).eval(), copy.deepcopy(te).eval()
    for p in list(ema_u.parameters()) + list(ema_t.parameters()):
        p.requires_grad_(False)
    ck = os.path.join(args.ckpt_dir, f"{stage}.pt")
    step, elapsed0, hist, text_reset = 0, 0.0, [], False
    if init_from and not os.path.exists(ck):
        st = torch.load(os.path.join(args.ckpt_dir, init_from), map_location="cpu", weights_only=False)
        for m, key in ((unet, "ema_unet"), (ema_u, "ema_unet"), (te, "ema_te"), (ema_t, "ema_te")):
            m.load_state_dict(st[key])
        text_reset = bool(st.get("text_reset"))
        log(f"{stage}: starting from the EMA weights of {init_from} (step {st['step']})")
    elif stage == "unet" and args.from_model and not os.path.exists(ck):
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel
        u = UNet2DConditionModel.from_pretrained(os.path.join(args.from_model, "unet"), torch_dtype=torch.float32)
        t = CLIPTextModel.from_pretrained(os.path.join(args.from_model, "text_encoder"), torch_dtype=torch.float32)
        for m, src in ((unet, u), (ema_u, u), (te, t), (ema_t, t)):
            m.load_state_dict(src.state_dict())
        log(f"unet: starting from the UNet and text encoder of {args.from_model}")
    elif os.path.exists(ck):
        st = torch.load(ck, map_location="cpu", weights_only=False)
        unet.load_state_dict(st["unet"])
        ema_u.load_state_dict(st["ema_unet"])
        step, elapsed0, hist = st["step"], st["elapsed"], st["hist"]
        fresh_text = (stage == "unet" and args.reset_text_encoder_at and step < args.reset_text_encoder_at + 1
                      and not st.get("text_reset"))
        if fresh_text:
            log(f"unet: new text encoder (seed {args.seed + 1}) and optimizer at step {step}")
            torch.manual_seed(args.seed + 1)
            from transformers import CLIPTextConfig, CLIPTextModel
            te = CLIPTextModel(CLIPTextConfig(**configs.TEXT_ENCODER))
            ema_t = copy.deepcopy(te).eval()
            for p in ema_t.parameters():
                p.requires_grad_(False)
            params = list(unet.parameters()) + list(te.parameters())
            opt = new_optimizer()
        else:
            te.load_state_dict(st["te"])
            ema_t.load_state_dict(st["ema_te"])
            if len(st["opt"]["param_groups"]) == len(opt.param_groups):
                opt.load_state_dict(st["opt"])
        text_reset = bool(st.get("text_reset")) or fresh_text
        log(f"{stage}: resumed at step {step} ({elapsed0 / 60:.1f} min)")
    nu = sum(p.numel() for p in unet.parameters())
    nt = sum(p.numel() for p in te.parameters())
    log(f"unet: {nu / 1e6:.2f} M params, text encoder {nt / 1e6:.2f} M params, batch {args.unet_batch}")
    sched = train_scheduler()
    acp = sched.alphas_cumprod.float()
    snr = acp / (1 - acp).clamp(min=1e-12)
    v_target = sched.config.prediction_type == "v_prediction"
    if v_target:  # plain v-MSE: Min-SNR weights vanish at zero SNR, exactly where the prompt must be learnt
        weight = torch.ones_like(snr)
    else:  # Min-SNR-gamma weighting, epsilon target
        weight = torch.clamp(snr, max=args.min_snr) / snr
    budget = Budget(steps, minutes, elapsed0)
    win = configs.UNET["sample_size"]
    last_ck = last_sample = time.time()
    run = []
    unet.train()
    te.train()

    def save():
        atomic_save(dict(unet=unet.state_dict(), te=te.state_dict(), ema_unet=ema_u.state_dict(),
                         ema_te=ema_t.state_dict(), opt=opt.state_dict(), step=step,
                         elapsed=budget.elapsed(), hist=hist, latent_norm=(mu, sd), text_reset=text_reset), ck)

    while not budget.finished(step):
        rng = np.random.default_rng([args.seed, 2, step])
        xs, texts = [], []
        for _ in range(args.unet_batch):
            j = rng.integers(len(lats)) if pick is None else rng.choice(len(lats), p=pick)
            z = lats[j]
            o = rng.integers(0, z.shape[-1] - win + 1)
            xs.append(z[:, :, o:o + win])
            drop = rng.uniform() < args.cond_drop or (stage == "unet" and step < args.uncond_steps)
            texts.append("" if drop else caps[j][rng.integers(len(caps[j]))])
        x0 = torch.stack(xs)
        ids = torch.stack([ids_of[t] for t in texts])
        g = torch.Generator().manual_seed(args.seed * 1000003 + step)
        noise = torch.randn(x0.shape, generator=g)
        if args.offset_noise:  # per-sample, per-channel constant: lets the model move an image's overall colour
            noise = noise + args.offset_noise * torch.randn((x0.shape[0], x0.shape[1], 1, 1), generator=g)
        n_t = sched.config.num_train_timesteps
        t = torch.randint(0, n_t, (x0.shape[0],), generator=g)
        if high_noise_share:
            high = torch.rand(x0.shape[0], generator=g) < high_noise_share
            t = torch.where(high, torch.randint(int(args.high_noise_from * n_t), n_t, t.shape, generator=g), t)
        xt = sched.add_noise(x0, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16)):
            enc = te(ids)[0]
            pred = unet(xt, t, enc).sample.float()
        target = sched.get_velocity(x0, noise, t) if v_target else noise
        per = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        loss = (per * weight[t]).mean()
        lrf = lr_factor(step, budget.progress(step), args.unet_warmup, final=0.1)
        for gr in opt.param_groups:
            gr["lr"] = lr * lrf * gr.get("lr_scale", 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for src, dst in ((unet, ema_u), (te, ema_t)):
                for p, e in zip(src.parameters(), dst.parameters()):
                    e.lerp_(p, 1 - decay)
        run.append([loss.item(), per.mean().item()])
        if step % args.log_every == 0:
            m = np.mean(run, 0)
            hist.append([step, *m.tolist()])
            log(f"{stage} step {step} loss {m[0]:.4f} mse {m[1]:.4f} lr {lr * lrf:.2e} "
                f"elapsed {budget.elapsed() / 60:.1f} min")
            run = []
        now = time.time()
        if now - last_ck > 60 * args.ckpt_minutes or budget.finished(step):
            save()
            last_ck = time.time()
        if now - last_sample > 60 * args.sample_minutes:
            sample_grid(args, ema_u, ema_t, tok, (mu, sd), f"{stage}_step{step:06d}.png")
            last_sample = time.time()
    save()
    sample_grid(args, ema_u, ema_t, tok, (mu, sd), f"{stage}_final.png")
    record_stage(args, stage, steps=step, minutes=round(budget.elapsed() / 60, 1), unet_params=nu,
                 text_params=nt, last_log=hist[-1] if hist else None, batch=args.unet_batch,
                 lr=lr, high_noise_share=high_noise_share,
                 **(dict(from_model=os.path.abspath(args.from_model)) if stage == "unet" and args.from_model else {}),
                 **(dict(scene_weights=args.tune_scene_weight) if stage == "tune" else {}))
    mark_done(args, stage)
    log(f"{stage}: done, {step} steps, {budget.elapsed() / 60:.1f} min")


@torch.no_grad()
def sample_grid(args, unet, te, tok, norm, name, steps=None, cfg=5.0, prompts=SAMPLE_PROMPTS):
    from diffusers import DDIMScheduler
    t0 = time.time()
    vae = fold_latent_norm(load_vae_final(args), *norm)
    sch = DDIMScheduler(**configs.SCHEDULER)
    sch.set_timesteps(steps or args.sample_steps)
    cond = te(tokenize(tok, list(prompts)))[0]
    unc = te(tokenize(tok, [""] * len(prompts)))[0]
    g = torch.Generator().manual_seed(1234)
    x = torch.randn((len(prompts), 4, 64, 64), generator=g)
    was = unet.training
    unet.eval()
    for t in sch.timesteps:
        e = unet(torch.cat([x, x]), t, torch.cat([unc, cond])).sample
        eu, ec = e.chunk(2)
        x = sch.step(eu + cfg * (ec - eu), t, x).prev_sample
    unet.train(was)
    imgs = [to_uint8(vae.decode(x[i:i + 1]).sample[0]) for i in range(len(prompts))]
    save_png(np.concatenate(imgs, 1), os.path.join(args.ckpt_dir, "samples", name))
    log(f"sample grid {name} ({', '.join(prompts)}) in {time.time() - t0:.0f} s")


# ---------------------------------------------------------------------------------------------
# stage 4: export

MODEL_CARD = """---
license: other
library_name: diffusers
pipeline_tag: text-to-image
tags: [stable-diffusion, multidiffusion, panorama, tiny, procedural-data]
---

# landscape-demo: a tiny Stable-Diffusion-architecture model for panoramas

A very small text-to-image latent diffusion model with exactly the Stable Diffusion 1.x
architecture (`AutoencoderKL`, `CLIPTextModel`, `UNet2DConditionModel`, `DDIMScheduler`),
trained **from scratch on CPU** in this repository on procedurally generated landscapes. It
exists so that `panorama` can render a real picture with no user-supplied weights, e.g.

    panorama --W 2048 --H 512 --prompt "snowy mountains at sunset"

It only knows the landscapes of its training data (below); it is a demo, not a general model.

## Components (fp16 safetensors, {total_mb:.1f} MB in all)

| component | class | configuration | parameters |
|---|---|---|---|
| unet | UNet2DConditionModel | sample_size 64, block_out_channels {unet_ch}, norm_num_groups 8, layers_per_block 1, DownBlock2D x2 + CrossAttnDownBlock2D x2 (attention at 16x16 and 8x8 latent), cross_attention_dim {xdim}, 4 heads | {unet_p:,} |
| vae | AutoencoderKL | block_out_channels {vae_ch}, norm_num_groups 8, layers_per_block 1, 4 latent channels (8x downsampling), no mid-block attention, scaling_factor 1.0 (latents normalised per channel inside quant_conv / post_quant_conv) | {vae_p:,} |
| text_encoder | CLIPTextModel | hidden 64, 3 layers, 4 heads, quick_gelu, 77 positions, vocab 49408 | {te_p:,} |
| tokenizer | CLIPTokenizer | the original OpenAI CLIP BPE vocabulary (vocab.json, merges.txt), pad token `<|endoftext|>`, max length 77 | - |
| scheduler | DDIMScheduler | scaled_linear betas 0.00085..0.012 rescaled to zero terminal SNR, 1000 steps, v-prediction, trailing timesteps, steps_offset 1 | - |

UNet cost: about {gflop:.1f} GFLOP per 64x64-latent (512x512-pixel) evaluation of one sample.

## Training data

`tools/train-demo/landscapes.py` (numpy, deterministic from a seed and an index) renders wide
landscape images 512 pixels high and 1024-2048 wide: a sky depending on the time of day (dawn,
noon, sunset, night with stars and a moon), optional clouds (some or overcast) and fog; terrain
of one of six kinds: mountain ranges (optionally snow-capped), rolling hills, desert dunes, the
sea with sky/sun/moon reflections, a lake reflecting mountains and a forest shore, pine forests;
colours and lighting follow the time of day. The horizon always lies between 45 % and 70 % of
the height, so any 512x512 window shows sky above ground. Captions are built from the
attributes, several per image (e.g. "snowy mountains at sunset", "a calm sea under a starry
night sky", "rolling hills at noon with clouds", "a lake below snowy mountains at dawn").

## Training (CPU, 2 threads)

{training}

Command (from the repository root; each stage resumes from `tools/train-demo/checkpoints/`):

    tools/train-demo/run_all.sh        # = train.py vae, latents, unet, tune, export in sequence

## Licence

The weights were trained from scratch on synthetic data generated by code in this repository
and are distributed with it under the repository's terms. The tokenizer files `vocab.json` and
`merges.txt` are the original CLIP BPE vocabulary, MIT-licensed by OpenAI (and redistributed by
OpenCLIP, also MIT); their licences are in `tokenizer/LICENSE.openai_CLIP` and
`tokenizer/LICENSE.open_clip`.
"""


def unet_gflop(unet):
    flops = [0]

    def conv_hook(m, i, o):
        flops[0] += 2 * o.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, i, o):
        flops[0] += 2 * o.numel() * m.in_features

    hs = [m.register_forward_hook(conv_hook) for m in unet.modules() if isinstance(m, torch.nn.Conv2d)]
    hs += [m.register_forward_hook(lin_hook) for m in unet.modules() if isinstance(m, torch.nn.Linear)]
    xdim = unet.config.cross_attention_dim
    with torch.no_grad():
        unet(torch.randn(1, 4, 64, 64), 500, torch.randn(1, 77, xdim))
    for h in hs:
        h.remove()
    return flops[0] / 1e9


def stage_export(args):
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    out = args.out
    # the tuned weights when the tune stage has finished, else the UNet stage's
    ck = torch.load(os.path.join(args.ckpt_dir, "tune.pt" if is_done(args, "tune") else "unet.pt"),
                    map_location="cpu", weights_only=False)
    stats = read_json(os.path.join(args.ckpt_dir, "latents", "stats.json"))
    mu, sd = latent_norm(stats)
    unet, te = new_unet_and_text(args.seed)
    unet.load_state_dict(ck["ema_unet" if args.export_ema else "unet"])
    te.load_state_dict(ck["ema_te" if args.export_ema else "te"])
    vae = fold_latent_norm(load_vae_final(args, decoder=is_done(args, "decoder")), mu, sd)
    tok = make_tokenizer(args)
    sch = DDIMScheduler(**configs.SCHEDULER)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sch,
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.to(torch.float16)
    if os.path.exists(out):
        shutil.rmtree(out)
    pipe.save_pretrained(out, safe_serialization=True)
    tdir = os.path.join(out, "tokenizer")
    # the real CLIP vocabulary files, byte for byte, with their licences
    for f in ("vocab.json", "merges.txt", "LICENSE.openai_CLIP", "LICENSE.open_clip"):
        shutil.copyfile(os.path.join(args.vocab_dir, f), os.path.join(tdir, f))
    for f in os.listdir(tdir):
        if f not in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                     "LICENSE.openai_CLIP", "LICENSE.open_clip"):
            os.remove(os.path.join(tdir, f))
    special = {
        "bos_token": {"content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
        "eos_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
        "pad_token": "<|endoftext|>",
        "unk_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
    }
    write_json(special, os.path.join(tdir, "special_tokens_map.json"))
    tc = read_json(os.path.join(tdir, "tokenizer_config.json"), {})
    tc.update({"tokenizer_class": "CLIPTokenizer", "model_max_length": configs.MAX_TOKENS,
               "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "do_lower_case": True, "errors": "replace",
               "clean_up_tokenization_spaces": True})
    write_json(tc, os.path.join(tdir, "tokenizer_config.json"))

    for comp in ("unet", "vae", "text_encoder"):  # no local paths in the shipped configs
        cp = os.path.join(out, comp, "config.json")
        c = read_json(cp)
        c.pop("_name_or_path", None)
        write_json(c, cp)

    # sizes, dtypes
    from safetensors import safe_open
    total = 0
    for root, _, files in os.walk(out):
        for f in files:
            p = os.path.join(root, f)
            total += os.path.getsize(p)
            if f.endswith(".safetensors"):
                with safe_open(p, "pt") as sfile:
                    dts = {sfile.get_slice(k).get_dtype() for k in sfile.keys()}
                assert dts == {"F16"}, (p, dts)
    nu = sum(p.numel() for p in unet.parameters())
    nv = sum(p.numel() for p in vae.parameters())
    nt = sum(p.numel() for p in te.parameters())
    gflop = unet_gflop(new_unet_and_text(0)[0])
    st = read_json(os.path.join(args.ckpt_dir, "stages.json"), {})
    lines = []
    if st.get("vae", {}).get("from_model"):
        lines.append("- VAE: the one of the model this run continues (see the history below), unchanged")
    elif "vae" in st:
        v = st["vae"]
        ll = v.get("last_log")
        lines.append(f"- VAE: {v.get('steps')} steps of batch {v.get('batch')} random {v.get('crop')}x{v.get('crop')} "
                     f"crops from {v.get('images')} images, {v.get('minutes')} min; loss = L1 + 0.5 x L1 of "
                     f"image gradients + {args.vae_kl:g} x KL per latent element"
                     + (f"; final L1 {ll[1]:.4f}, gradient L1 {ll[2]:.4f}" if ll else ""))
    if "decoder" in st and not st["decoder"].get("from_model"):
        v = st["decoder"]
        ll = v.get("last_log")
        snow = v.get("snow_check")
        lines.append(f"- Decoder: {v.get('steps')} more steps on the decoder and post_quant_conv alone (encoder "
                     f"frozen, so the latent space stays), batch {v.get('batch')} random {v.get('crop')}x{v.get('crop')} "
                     f"crops, {v.get('minutes')} min, AdamW lr {v.get('lr'):g}; loss = L1 + 0.5 x L1 of image "
                     f"gradients + {v.get('mse'):g} x MSE"
                     + (f" + {v.get('color'):g} x L1 of 8x8-block mean colours" if v.get("color") else "")
                     + (f"; final L1 {ll[1]:.4f}" if ll else "")
                     + (f"; near-white pixels of 'snowy mountains at noon' scenes {snow[0]:.3f}, after a round "
                        f"trip {snow[1]:.3f} (before this stage {v['snow_before'][1]:.4f})"
                        if snow and "snow_before" in v else ""))
    if "latents" in st and st.get("vae", {}).get("from_model"):
        lines.append(f"- Latents: {st['latents'].get('scenes')} panoramas encoded with that VAE "
                     f"({st['latents'].get('minutes')} min), used as they come (its latent normalisation is folded in)")
    elif "latents" in st:
        v = st["latents"]
        lines.append(f"- Latents: {v.get('scenes')} panoramas encoded with the trained VAE ({v.get('minutes')} min); "
                     f"per-channel mean {[round(v, 3) for v in mu.flatten().tolist()]} and std "
                     f"{[round(v, 3) for v in sd.flatten().tolist()]}, folded into quant_conv / post_quant_conv "
                     f"so that the shipped VAE's latents are zero-mean, unit-variance (scaling_factor 1.0)")
    if "unet" in st:
        v = st["unet"]
        ll = v.get("last_log")
        lines.append("- UNet + text encoder: " + ("continued from the ones of the model this run continues, "
                     if v.get("from_model") else "") + f"trained together, {v.get('steps')} steps of batch {v.get('batch')} random "
                     f"64x64 windows of those latents, {v.get('minutes')} min; v-prediction on the "
                     f"zero-terminal-SNR schedule, plain MSE, offset noise {args.offset_noise:g}, AdamW lr {args.unet_lr:g} (warm-up, cosine), 10 % empty captions for "
                     f"classifier-free guidance, EMA {args.ema} weights exported"
                     + (f"; final weighted loss {ll[1]:.4f}, plain MSE {ll[2]:.4f}" if ll else ""))
    if "tune" in st:
        v = st["tune"]
        ll = v.get("last_log")
        lines.append(f"- Tune: {v.get('steps')} more steps of batch {v.get('batch')} from the EMA weights above, "
                     f"{v.get('minutes')} min, fresh AdamW at lr {v.get('lr', args.tune_lr):g} (warm-up, cosine), "
                     f"{100 * v.get('high_noise_share', args.tune_high_noise):.0f} % of the timesteps drawn from "
                     f"t >= {args.high_noise_from:g} T, where the prompt alone sets the picture's overall light; "
                     f"EMA {args.ema} weights exported"
                     + (f"; scenes drawn with weights {' '.join(v.get('scene_weights', args.tune_scene_weight))}"
                        if v.get("scene_weights", args.tune_scene_weight) else "")
                     + (f"; final MSE {ll[2]:.4f}" if ll else ""))
    history = os.path.join(HERE, "card_history.md")
    if os.path.exists(history):
        with open(history) as f:
            lines.append("\n" + f.read().strip())
    card = MODEL_CARD.format(total_mb=total / 1e6, unet_ch=tuple(configs.UNET["block_out_channels"]),
                             xdim=configs.UNET["cross_attention_dim"], unet_p=nu,
                             vae_ch=tuple(configs.VAE["block_out_channels"]), vae_p=nv, te_p=nt,
                             gflop=gflop, training="\n".join(lines) or "(smoke test)")
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(card)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
    log(f"export: {out}: {total / 1e6:.2f} MB; unet {nu:,} vae {nv:,} text {nt:,} params; "
        f"UNet {gflop:.2f} GFLOP per 64x64 sample (convs + linears)")
    if total > 25e6:
        log("export: WARNING: folder is larger than 25 MB")

    # check: diffusers loads it and generates
    t0 = time.time()
    p2 = StableDiffusionPipeline.from_pretrained(out, torch_dtype=torch.float32)
    p2.set_progress_bar_config(disable=True)
    assert p2.tokenizer.pad_token == "<|endoftext|>"
    g = torch.Generator().manual_seed(0)
    im = p2(args.check_prompt, height=512, width=512, num_inference_steps=args.check_steps,
            guidance_scale=5.0, generator=g).images[0]
    os.makedirs(os.path.join(args.ckpt_dir, "samples"), exist_ok=True)
    im.save(os.path.join(args.ckpt_dir, "samples", "export_check.png"))
    log(f"export: StableDiffusionPipeline.from_pretrained + 512x512 '{args.check_prompt}' "
        f"({args.check_steps} steps) ok in {time.time() - t0:.0f} s")
    if args.panorama:
        from diffusers import StableDiffusionPanoramaPipeline
        t0 = time.time()
        pp = StableDiffusionPanoramaPipeline(**{k: getattr(p2, k) for k in
                                                ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
                                             safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
        pp.set_progress_bar_config(disable=True)
        for prompt in args.panorama:
            g = torch.Generator().manual_seed(0)
            im = pp(prompt, height=512, width=2048, num_inference_steps=args.check_steps, guidance_scale=5.0,
                    generator=g).images[0]
            name = "panorama_" + prompt.replace(" ", "_")[:60] + ".png"
            im.save(os.path.join(args.ckpt_dir, "samples", name))
            log(f"export: panorama '{prompt}' -> samples/{name} in {time.time() - t0:.0f} s")
            t0 = time.time()
    record_stage(args, "export", out=out, megabytes=round(total / 1e6, 2))


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stages", nargs="+", choices=["vae", "decoder", "latents", "unet", "tune", "export", "all"])
    ap.add_argument("--smoke", action="store_true", help="a few iterations of everything, in checkpoints/smoke/")
    ap.add_argument("--ckpt-dir", default=os.path.join(HERE, "checkpoints"))
    ap.add_argument("--out", default=os.path.join(REPO, "models", "landscape-demo"))
    ap.add_argument("--vocab-dir", default=os.environ.get("CLIP_VOCAB_DIR", "/work/shared/data/clip-vocab"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-resume", action="store_true", help="delete this stage's checkpoints first")
    ap.add_argument("--ckpt-minutes", type=float, default=4.0)
    ap.add_argument("--sample-minutes", type=float, default=15.0)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--snowy-share", type=float, default=landscapes.SNOWY_SHARE,
                    help="probability that a mountain or lake scene is snow-capped (data)")
    ap.add_argument("--deep-snow", type=int, default=int(landscapes.DEEP_SNOW),
                    help="1: snow further down the slopes and a snowfield in front (data; landscapes.DEEP_SNOW)")
    ap.add_argument("--from-model", default=None, metavar="DIR",
                    help="continue an exported model (a diffusers folder from an earlier run): its VAE is "
                         "this run's (the vae and decoder stages only copy it) and the UNet stage starts "
                         "from its UNet and text encoder")
    ap.add_argument("--bf16", type=int, default=1, help="bfloat16 autocast for the training steps (1.4x faster on AVX512-BF16 CPUs)")
    # vae
    ap.add_argument("--vae-steps", type=int, default=100000)
    ap.add_argument("--vae-minutes", type=float, default=35.0)
    ap.add_argument("--vae-batch", type=int, default=8)
    ap.add_argument("--vae-crop", type=int, default=128)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--vae-scale-p", type=float, nargs=3, default=[0.3, 0.3, 0.4],
                    help="probabilities of crops at full, 1/2 and 1/4 image scale")
    ap.add_argument("--vae-kl", type=float, default=1e-6)
    ap.add_argument("--vae-mse", type=float, default=0.0, help="weight of an MSE term beside L1 (as in the decoder stage)")
    ap.add_argument("--vae-pool", type=int, default=160, help="images the VAE sees (generated as it goes)")
    ap.add_argument("--vae-pool-start", type=int, default=16)
    ap.add_argument("--vae-add-every", type=int, default=4)
    # decoder (fine-tunes the VAE's decoder, encoder frozen; can run after any later stage)
    ap.add_argument("--decoder-steps", type=int, default=1000000)
    ap.add_argument("--decoder-minutes", type=float, default=20.0)
    ap.add_argument("--decoder-lr", type=float, default=2e-4)
    ap.add_argument("--decoder-batch", type=int, default=8)
    ap.add_argument("--decoder-mse", type=float, default=1.0, help="weight of the MSE term beside L1")
    ap.add_argument("--decoder-color", type=float, default=0.0,
                    help="weight of an L1 term on 8x8-block mean colours (drift of whole areas: grey rock turned green, snow blue)")
    # latents
    ap.add_argument("--latent-scenes", type=int, default=2000)
    ap.add_argument("--latent-minutes", type=float, default=18.0)
    ap.add_argument("--latent-max-width", type=int, default=1024)
    ap.add_argument("--latent-shard", type=int, default=32)
    # unet
    ap.add_argument("--unet-steps", type=int, default=1000000)
    ap.add_argument("--unet-minutes", type=float, default=120.0)
    ap.add_argument("--unet-batch", type=int, default=8)
    ap.add_argument("--unet-lr", type=float, default=5e-4)
    ap.add_argument("--unet-warmup", type=int, default=100)
    ap.add_argument("--unet-high-noise", type=float, default=0.0,
                    help="share of the unet stage's timesteps drawn from t >= --high-noise-from (as --tune-high-noise)")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--min-snr", type=float, default=5.0)
    ap.add_argument("--cond-drop", type=float, default=0.1)
    ap.add_argument("--text-lr-scale", type=float, default=2.0, help="text encoder learning rate / UNet learning rate")
    ap.add_argument("--reset-text-encoder-at", type=int, default=0,
                    help="when resuming at this step or earlier (once), start a new text encoder and optimizer")
    ap.add_argument("--uncond-steps", type=int, default=0,
                    help="unet stage: the first N steps see only empty captions, so the UNet learns to draw "
                         "landscapes before the text encoder can explain them by light alone")
    ap.add_argument("--offset-noise", type=float, default=0.1, help="std of a per-sample, per-channel constant added to the noise")
    ap.add_argument("--sample-steps", type=int, default=20)
    # tune (continues the finished unet stage)
    ap.add_argument("--tune-steps", type=int, default=1000000)
    ap.add_argument("--tune-minutes", type=float, default=20.0)
    ap.add_argument("--tune-lr", type=float, default=2e-4)
    ap.add_argument("--tune-high-noise", type=float, default=0.5,
                    help="share of the tune stage's timesteps drawn from the noisiest end (see --high-noise-from)")
    ap.add_argument("--tune-scene-weight", nargs="*", default=[], metavar="KEY=W",
                    help="tune stage: draw scenes of a terrain (or 'snowy' ones) W times as often")
    ap.add_argument("--high-noise-from", type=float, default=0.7, help="the noisiest end: t >= this fraction of T")
    # export
    ap.add_argument("--export-ema", type=int, default=1)
    ap.add_argument("--check-prompt", default="snowy mountains at sunset")
    ap.add_argument("--check-steps", type=int, default=20)
    ap.add_argument("--panorama", nargs="*", default=[], help="also render these prompts at 2048x512")
    args = ap.parse_args()
    landscapes.SNOWY_SHARE = args.snowy_share
    landscapes.DEEP_SNOW = bool(args.deep_snow)

    if args.smoke:
        args.ckpt_dir = os.path.join(HERE, "checkpoints", "smoke")
        args.out = os.path.join(args.ckpt_dir, "export")
        args.vae_steps, args.vae_minutes, args.vae_batch, args.vae_crop = 3, 0, 2, 128
        args.decoder_batch = 2
        args.vae_pool, args.vae_pool_start, args.vae_add_every = 3, 2, 1
        args.latent_scenes, args.latent_minutes, args.latent_shard = 5, 0, 2
        args.unet_steps, args.unet_minutes, args.unet_batch, args.log_every = 4, 0, 2, 2
        args.tune_steps, args.tune_minutes = 4, 0
        args.decoder_steps, args.decoder_minutes = 3, 0
        args.sample_steps, args.check_steps, args.sample_minutes = 2, 2, 1e9
        args.panorama = args.panorama or ["snowy mountains at sunset"]
    os.makedirs(args.ckpt_dir, exist_ok=True)
    torch.set_num_threads(args.threads)
    stages = ["vae", "decoder", "latents", "unet", "tune", "export"] if "all" in args.stages else args.stages
    for s in stages:
        if args.no_resume and s != "export":
            for f in {"vae": ["vae.pt", "vae.done", "vae_final"],
                      "decoder": ["decoder.pt", "decoder.done", "vae_decoder_final"],
                      "latents": ["latents", "latents.done"],
                      "unet": ["unet.pt", "unet.done"], "tune": ["tune.pt", "tune.done"]}[s]:
                p = os.path.join(args.ckpt_dir, f)
                if os.path.isdir(p):
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.remove(p)
        t0 = time.time()
        log(f"=== stage {s} ===")
        dict(vae=stage_vae, decoder=stage_decoder, latents=stage_latents, unet=stage_unet, tune=stage_tune, export=stage_export)[s](args)
        log(f"=== stage {s} finished in {(time.time() - t0) / 60:.1f} min (this run) ===")


if __name__ == "__main__":
    main()
