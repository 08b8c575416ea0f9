#!/usr/bin/env python3
"""LCM-LoRA distillation of the shipped landscape-demo model (latent consistency distillation,
Luo et al. 2023, "LCM-LoRA"), so that it renders in 4 steps at guidance 1 with LCMScheduler.

    python distill_lcm.py                 # latents, train, export (each resumes; see README)
    python distill_lcm.py eval            # diffusers: LCM 4 steps vs DDIM 20, sharpness, adherence
    python distill_lcm.py all --smoke     # ~2-minute end-to-end run in checkpoints/lcm_smoke/

Stages (in order; `all` = latents train export eval):
  latents  scenes from landscapes.py (the shipped data switches: snowy share 0.75, deep snow),
           rendered 1024 wide, encoded with the shipped VAE (posterior mean; its latent
           normalisation is folded into quant_conv, scaling_factor 1.0, so the latents are used as
           they come, as train.py does for --from-model), cached in shards under the checkpoint dir
  train    teacher = shipped UNet (frozen) with classifier-free guidance, student = the same UNet
           plus a LoRA (own implementation, merged into the weight on the fly: W + alpha/r * up @ down),
           target = the student itself under stop-grad (no EMA, as LCM-LoRA); one skipping-step
           DDIM step of the teacher on the 50-step grid (k = 20), LCMScheduler's boundary scalings
           (sigma_data 0.5, timestep_scaling 10), v-prediction throughout, pseudo-Huber loss
  export   kohya/A1111 LoRA (lora_unet_<module>.lora_down/.lora_up/.alpha, fp16, ss_ metadata)
           and a parity check: diffusers load_lora_weights + fuse against the student
  eval     sample grids (LCM 4 steps, guidance 1 vs DDIM 20, guidance 5), sharpness, the
           DefaultModelTests adherence metrics on seeds 1-10
"""

import argparse
import datetime
import hashlib
import io
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import configs  # noqa: E402
import landscapes  # noqa: E402
import train as T  # noqa: E402  (helpers: get_image, to_tensor, to_uint8, Budget, lr_factor, ...)

log = T.log

# LoRA targets, as diffusers' LCM-LoRA script chooses them: attention projections, feed-forward,
# the transformers' proj_in/out (1x1 convs here), every resnet conv, shortcut and time projection,
# the down/upsampler convs.
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
           "conv1", "conv2", "conv_shortcut", "time_emb_proj", "downsamplers.0.conv", "upsamplers.0.conv")

N_TRAIN = 1000
DDIM_STEPS = 50                      # LCMScheduler's original_inference_steps
K = N_TRAIN // DDIM_STEPS            # 20: skipping step
SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0              # LCMScheduler's default

EVAL_PROMPTS = [
    "snowy mountains at sunset",
    "a calm sea under a starry night sky",
    "desert dunes at noon",
    "rolling green hills at dawn",
    "snowy mountains at noon",
]
# DefaultModelTests: (first, second, statistic name) -- first must score higher on >= 9 of 10 seeds
CHECKS = [
    ("a calm sea at noon", "a calm sea at night", "sky luminance"),
    ("snowy mountains at noon", "desert dunes at noon", "near-white fraction"),
    ("a calm sea at noon", "rocky mountains at noon", "lower-half blue share"),
]


# ---------------------------------------------------------------------------------------------
# schedule, scalings

def alphas_cumprod():
    return T.train_scheduler().alphas_cumprod.double()


def boundary_scalings(t):
    """c_skip, c_out of LCMScheduler.get_scalings_for_boundary_condition_discrete."""
    s = t.double() * TIMESTEP_SCALING
    return SIGMA_DATA ** 2 / (s ** 2 + SIGMA_DATA ** 2), s / (s ** 2 + SIGMA_DATA ** 2) ** 0.5


def ddim_grid():
    """The 50-step grid 19, 39, ..., 999 (LCMScheduler's lcm_origin_timesteps) and, per index, the
    alpha-bar of the step one below (alpha-bar(0) for the first), as diffusers' DDIMSolver."""
    acp = alphas_cumprod()
    ts = torch.arange(1, DDIM_STEPS + 1) * K - 1
    prev = torch.cat([acp[:1], acp[ts[:-1]]])
    return ts, prev


def v_to_x0_eps(v, x, a, s):
    """v-prediction -> (x0, eps) for x = a x0 + s eps (a = sqrt(alpha-bar), s = sqrt(1 - alpha-bar));
    exact at zero terminal SNR (a = 0: x0 = -v, eps = x)."""
    return a * x - s * v, a * v + s * x


def bc(t, ndim=4):
    return t.view(-1, *([1] * (ndim - 1))).float()


# ---------------------------------------------------------------------------------------------
# LoRA (own): a parametrization W -> W + alpha/r * up @ down, so the forward costs one conv/matmul
# with the merged weight (at rank 32 a separate low-rank branch would cost more than the 32-channel
# convs themselves). Shapes as kohya: linear down [r, in], up [out, r]; conv down [r, in, kh, kw],
# up [out, r, 1, 1].

class LoRADelta(torch.nn.Module):
    def __init__(self, weight, rank, alpha, gen):
        super().__init__()
        self.shape = tuple(weight.shape)
        conv = weight.dim() == 4
        self.down = torch.nn.Parameter(torch.empty(rank, *self.shape[1:]))
        self.up = torch.nn.Parameter(torch.zeros(self.shape[0], rank, *((1, 1) if conv else ())))
        torch.nn.init.kaiming_uniform_(self.down, a=math.sqrt(5), generator=gen)  # as nn.Linear, kohya, PEFT
        self.scale = alpha / rank

    def delta(self):
        return (self.scale * (self.up.flatten(1) @ self.down.flatten(1))).view(self.shape)

    def forward(self, w):
        return w + self.delta()


def lora_modules(unet):
    return [(n, m) for n, m in unet.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and n.endswith(TARGETS)]


def add_lora(unet, rank, alpha, seed):
    gen = torch.Generator().manual_seed(seed)
    deltas = {}
    for name, m in lora_modules(unet):
        d = LoRADelta(m.weight.detach(), rank, alpha, gen)
        parametrize.register_parametrization(m, "weight", d)
        deltas[name] = d
    return deltas


def lora_state(deltas):
    return {n: (d.down.detach().clone(), d.up.detach().clone()) for n, d in deltas.items()}


def load_lora_state(deltas, st):
    with torch.no_grad():
        for n, (down, up) in st.items():
            deltas[n].down.copy_(down)
            deltas[n].up.copy_(up)


# ---------------------------------------------------------------------------------------------
# models

def load_models(model_dir):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel
    unet = UNet2DConditionModel.from_pretrained(os.path.join(model_dir, "unet"), torch_dtype=torch.float32)
    te = CLIPTextModel.from_pretrained(os.path.join(model_dir, "text_encoder"), torch_dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(os.path.join(model_dir, "vae"), torch_dtype=torch.float32)
    for m in (unet, te, vae):
        m.eval()
        m.requires_grad_(False)
    return unet, te, vae


# ---------------------------------------------------------------------------------------------
# stage: latents

def stage_latents(args):
    d = os.path.join(args.ckpt_dir, "latents")
    os.makedirs(d, exist_ok=True)
    stp = os.path.join(d, "state.json")
    st = T.read_json(stp, dict(next_index=0, shards=0, elapsed=0.0))
    if st["next_index"] >= args.scenes:
        log(f"latents: {st['next_index']} scenes cached")
        return
    _, _, vae = load_models(args.model)
    t0 = time.time() - st["elapsed"]
    buf, idx = [], []
    i = st["next_index"]
    with torch.no_grad():
        while i < args.scenes:
            img = T.get_image(args, i, max_width=args.max_width)
            buf.append(vae.encode(T.to_tensor(img)[None]).latent_dist.mode()[0].half())  # posterior mean
            idx.append(i)
            i += 1
            if len(buf) == args.shard or i == args.scenes:
                T.atomic_save(dict(latents=buf, indices=idx), os.path.join(d, f"shard_{st['shards']:04d}.pt"))
                st.update(shards=st["shards"] + 1, next_index=i, elapsed=time.time() - t0)
                T.write_json(st, stp)
                log(f"latents: {i}/{args.scenes} scenes, {st['elapsed'] / 60:.1f} min")
                buf, idx = [], []


def load_latents(args):
    d = os.path.join(args.ckpt_dir, "latents")
    lats, idx, k = [], [], 0
    while os.path.exists(os.path.join(d, f"shard_{k:04d}.pt")):
        s = torch.load(os.path.join(d, f"shard_{k:04d}.pt"), map_location="cpu")
        lats += [z.float() for z in s["latents"]]
        idx += s["indices"]
        k += 1
    return lats[:args.scenes], idx[:args.scenes]


# ---------------------------------------------------------------------------------------------
# stage: train

def guidance_of(args, g, n):
    if args.guidance_max > args.guidance_min:
        return args.guidance_min + (args.guidance_max - args.guidance_min) * torch.rand(n, generator=g, dtype=torch.float64)
    return torch.full((n,), args.guidance_min, dtype=torch.float64)


def stage_train(args):
    ck = os.path.join(args.ckpt_dir, "lcm.pt")
    if os.path.exists(os.path.join(args.ckpt_dir, "train.done")):
        log("train: already done")
        return
    lats, idx = load_latents(args)
    attrs = [landscapes.attributes(i, args.seed) for i in idx]
    caps = [landscapes.captions(a) for a in attrs]
    teacher, te, _ = load_models(args.model)
    student, _, _ = load_models(args.model)
    deltas = add_lora(student, args.rank, args.alpha, args.seed)
    params = [p for d in deltas.values() for p in (d.down, d.up)]
    n_lora = sum(p.numel() for p in params)
    tok = T.make_tokenizer(args)
    all_caps = sorted({c for cs in caps for c in cs} | {""})
    with torch.no_grad():  # the text encoder is frozen: one embedding per distinct caption
        emb = torch.cat([te(T.tokenize(tok, all_caps[i:i + 64]))[0] for i in range(0, len(all_caps), 64)])
    emb_of = dict(zip(all_caps, emb))
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=args.weight_decay)
    step, elapsed0, hist = 0, 0.0, []
    if os.path.exists(ck):
        st = torch.load(ck, map_location="cpu", weights_only=False)
        load_lora_state(deltas, st["lora"])
        opt.load_state_dict(st["opt"])
        step, elapsed0, hist = st["step"], st["elapsed"], st["hist"]
        log(f"train: resumed at step {step} ({elapsed0 / 60:.1f} min)")
    log(f"train: {len(lats)} scenes, {len(all_caps)} captions; LoRA rank {args.rank} alpha {args.alpha} on "
        f"{len(deltas)} modules, {n_lora:,} params ({2 * n_lora / 1e6:.2f} MB fp16); batch {args.batch}, "
        f"guidance {args.guidance_min}..{args.guidance_max}, lr {args.lr}, loss {args.loss}")

    acp = alphas_cumprod()
    grid, acp_prev = ddim_grid()
    budget = T.Budget(args.steps, args.minutes, elapsed0)
    win = configs.UNET["sample_size"]
    unc = emb_of[""]
    last_ck = last_sample = time.time()
    run, t_run = [], time.time()
    ac = dict(device_type="cpu", dtype=torch.bfloat16, enabled=bool(args.bf16))

    def save():
        T.atomic_save(dict(lora=lora_state(deltas), opt=opt.state_dict(), step=step, elapsed=budget.elapsed(),
                           hist=hist, rank=args.rank, alpha=args.alpha, args=vars(args)), ck)

    while not budget.finished(step):
        rng = np.random.default_rng([args.seed, 11, step])
        xs, cs = [], []
        for _ in range(args.batch):
            j = rng.integers(len(lats))
            o = rng.integers(0, lats[j].shape[-1] - win + 1)
            xs.append(lats[j][:, :, o:o + win])
            cs.append(emb_of[caps[j][rng.integers(len(caps[j]))]])
        x0, c = torch.stack(xs), torch.stack(cs)
        b = x0.shape[0]
        g = torch.Generator().manual_seed(args.seed * 1000003 + step)
        noise = torch.randn(x0.shape, generator=g)
        n = torch.randint(0, DDIM_STEPS, (b,), generator=g)
        t = grid[n]                                   # 19 + 20 n
        tp = (t - K).clamp(min=0)                     # the target's timestep
        w = guidance_of(args, g, b)
        a_t, s_t = acp[t].sqrt(), (1 - acp[t]).sqrt()
        a_p, s_p = acp_prev[n].sqrt(), (1 - acp_prev[n]).sqrt()
        xt = bc(a_t) * x0 + bc(s_t) * noise
        cskip_t, cout_t = boundary_scalings(t)
        cskip_p, cout_p = boundary_scalings(tp)
        # student: consistency function at t
        with torch.autocast(**ac):
            v = student(xt, t, c).sample.float()
        x0_s, _ = v_to_x0_eps(v, xt, bc(a_t), bc(s_t))
        pred = bc(cskip_t) * xt + bc(cout_t) * x0_s
        with torch.no_grad():
            # teacher with classifier-free guidance: one DDIM step t -> t - 20
            with torch.autocast(**ac):
                vv = teacher(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([c, unc.expand_as(c)])).sample.float()
            vc, vu = vv.chunk(2)
            x0_c, e_c = v_to_x0_eps(vc, xt, bc(a_t), bc(s_t))
            x0_u, e_u = v_to_x0_eps(vu, xt, bc(a_t), bc(s_t))
            x0_g = x0_u + bc(w) * (x0_c - x0_u)
            e_g = e_u + bc(w) * (e_c - e_u)
            xp = bc(a_p) * x0_g + bc(s_p) * e_g
            # target: the student (stop-grad) at t - 20
            with torch.autocast(**ac):
                v2 = student(xp, tp, c).sample.float()
            x0_2, _ = v_to_x0_eps(v2, xp, bc(a_p), bc(s_p))
            target = bc(cskip_p) * xp + bc(cout_p) * x0_2
        if args.loss == "huber":
            loss = (torch.sqrt((pred - target) ** 2 + args.huber_c ** 2) - args.huber_c).mean()
        else:
            loss = F.mse_loss(pred, target)
        lrf = T.lr_factor(step, budget.progress(step), args.warmup, final=0.1)
        for gr in opt.param_groups:
            gr["lr"] = args.lr * lrf
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        run.append([loss.item(), F.mse_loss(pred.detach(), target).item(), gn.item()])
        if step % args.log_every == 0:
            m = np.mean(run, 0)
            sps = (time.time() - t_run) / len(run)
            hist.append([step, *m.tolist(), sps])
            log(f"train step {step} loss {m[0]:.5f} mse {m[1]:.5f} gradnorm {m[2]:.3f} lr {args.lr * lrf:.2e} "
                f"{sps:.2f} s/step elapsed {budget.elapsed() / 60:.1f} min")
            run, t_run = [], time.time()
        now = time.time()
        if now - last_ck > 60 * args.ckpt_minutes:
            save()
            last_ck = time.time()
        if now - last_sample > 60 * args.sample_minutes:
            sample_grid(args, student, te, tok, f"lcm_step{step:06d}.png")
            t_run += time.time() - now  # s/step counts training only
            last_sample = time.time()
    save()
    sample_grid(args, student, te, tok, "lcm_final.png")
    with open(os.path.join(args.ckpt_dir, "train.done"), "w") as f:
        f.write(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    log(f"train: done, {step} steps, {budget.elapsed() / 60:.1f} min")


@torch.no_grad()
def lcm_sample(unet, cond, latents, steps=4, generator=None):
    """diffusers' LCMScheduler on the shipped scheduler config, guidance 1 (no unconditional pass)."""
    from diffusers import LCMScheduler
    sch = LCMScheduler.from_config(T.read_json(os.path.join(REPO, "models", "landscape-demo", "scheduler",
                                                            "scheduler_config.json")))
    sch.set_timesteps(steps)
    x = latents
    for t in sch.timesteps:
        x = sch.step(unet(x, t, cond).sample, t, x, generator=generator).prev_sample
    return x


@torch.no_grad()
def sample_grid(args, unet, te, tok, name, prompts=T.SAMPLE_PROMPTS):
    t0 = time.time()
    _, _, vae = load_models(args.model)
    cond = te(T.tokenize(tok, list(prompts)))[0]
    g = torch.Generator().manual_seed(1234)
    x = torch.randn((len(prompts), 4, 64, 64), generator=g)
    x = lcm_sample(unet, cond, x, generator=g)
    imgs = [T.to_uint8(vae.decode(x[i:i + 1]).sample[0]) for i in range(len(prompts))]
    T.save_png(np.concatenate(imgs, 1), os.path.join(args.ckpt_dir, "samples", name))
    log(f"sample grid {name} (LCM 4 steps, guidance 1) in {time.time() - t0:.0f} s")


# ---------------------------------------------------------------------------------------------
# stage: export (kohya / A1111 layout)

def kohya_name(module_path):
    return "lora_unet_" + module_path.replace(".", "_")


def addnet_hash(data):
    """kohya's sshs_model_hash: sha256 of a safetensors file's bytes after its header."""
    n = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + n:]).hexdigest()


def addnet_legacy_hash(data):
    """kohya's sshs_legacy_hash: sha256 of 64 KiB at offset 1 MiB, first 8 hex digits."""
    return hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def stage_export(args):
    from safetensors.torch import save
    ck = torch.load(os.path.join(args.ckpt_dir, "lcm.pt"), map_location="cpu", weights_only=False)
    rank, alpha = ck["rank"], ck["alpha"]
    tensors = {}
    for name, (down, up) in ck["lora"].items():
        k = kohya_name(name)
        tensors[k + ".lora_down.weight"] = down.half().contiguous()
        tensors[k + ".lora_up.weight"] = up.half().contiguous()
        tensors[k + ".alpha"] = torch.tensor(float(alpha)).half()
    a = ck["args"]
    started = datetime.datetime.now(datetime.timezone.utc)
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(float(alpha)),
        "ss_network_args": json.dumps({"conv_dim": str(rank), "conv_alpha": str(float(alpha))}),
        "ss_base_model_version": "sd_v1",
        "ss_v2": "False",
        "ss_sd_model_name": "landscape-demo",
        "ss_output_name": "landscape-demo-lcm",
        "ss_training_comment": ("LCM-LoRA (latent consistency distillation) of models/landscape-demo; "
                                "sample with LCMScheduler, 4 steps, guidance 1 (tools/train-demo/distill_lcm.py)"),
        "ss_steps": str(ck["step"]),
        "ss_max_train_steps": str(a["steps"]),
        "ss_learning_rate": str(a["lr"]),
        "ss_unet_lr": str(a["lr"]),
        "ss_text_encoder_lr": "0",
        "ss_lr_scheduler": "cosine_with_warmup",
        "ss_lr_warmup_steps": str(a["warmup"]),
        "ss_optimizer": "torch.optim.AdamW(weight_decay=%g)" % a["weight_decay"],
        "ss_batch_size_per_device": str(a["batch"]),
        "ss_total_batch_size": str(a["batch"]),
        "ss_num_train_images": str(a["scenes"]),
        "ss_resolution": "(512, 512)",
        "ss_seed": str(a["seed"]),
        "ss_mixed_precision": "bf16" if a["bf16"] else "no",
        "ss_prediction_type": "v_prediction",
        "ss_zero_terminal_snr": "True",
        "ss_v_parameterization": "True",
        "ss_network_train_unet_only": "True",
        "ss_training_minutes": f"{ck['elapsed'] / 60:.1f}",
        "ss_training_finished_at": str(int(started.timestamp())),
        "ss_lcm": json.dumps({"loss": a["loss"], "huber_c": a["huber_c"], "guidance": [a["guidance_min"], a["guidance_max"]],
                              "original_inference_steps": DDIM_STEPS, "timestep_scaling": TIMESTEP_SCALING,
                              "target": "student, stop-grad (no EMA)", "teacher": "models/landscape-demo"}),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers",
        "modelspec.title": "landscape-demo-lcm",
        "modelspec.prediction_type": "v",
    }
    data = save(tensors, metadata=meta)
    meta["sshs_model_hash"] = addnet_hash(data)
    meta["sshs_legacy_hash"] = addnet_legacy_hash(data)
    data = save(tensors, metadata=meta)
    os.makedirs(os.path.dirname(args.lora_out), exist_ok=True)
    tmp = args.lora_out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.lora_out)
    size = os.path.getsize(args.lora_out)
    log(f"export: {args.lora_out}: {size / 1e6:.3f} MB, {len(ck['lora'])} modules, rank {rank}, alpha {alpha}, "
        f"step {ck['step']}")
    if size > 5e6:
        log("export: WARNING: larger than 5 MB")
    res = parity(args, ck)
    T.write_json(dict(size_bytes=size, step=ck["step"], minutes=round(ck["elapsed"] / 60, 1), **res),
                 os.path.join(args.ckpt_dir, "export.json"))


@torch.no_grad()
def parity(args, ck):
    """diffusers' load_lora_weights (kohya conversion) + fuse_lora against the training student:
    max |diff| of UNet outputs, both against the fp32 student and against the student with the
    fp16-rounded LoRA (isolating the name / layout conversion from the fp16 rounding)."""
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.load_lora_weights(args.lora_out)
    pipe.fuse_lora()
    student, _, _ = load_models(args.model)
    deltas = add_lora(student, ck["rank"], ck["alpha"], 0)
    g = torch.Generator().manual_seed(99)
    x = torch.randn(2, 4, 64, 64, generator=g)
    c = torch.randn(2, 77, configs.TEXT_ENCODER["hidden_size"], generator=g)
    res = {}
    for tag, st in (("fp32", ck["lora"]), ("fp16", {n: (d.half().float(), u.half().float()) for n, (d, u) in ck["lora"].items()})):
        load_lora_state(deltas, st)
        worst, scale = 0.0, 0.0
        for t in (999, 759, 499, 259, 19):
            a = student(x, t, c).sample
            b = pipe.unet(x, t, c).sample
            worst = max(worst, (a - b).abs().max().item())
            scale = max(scale, a.abs().max().item())
        res[f"max_diff_vs_{tag}_student"] = worst
        res["max_abs_output"] = scale
    base, _, _ = load_models(args.model)
    res["max_lora_effect"] = max((pipe.unet(x, t, c).sample - base(x, t, c).sample).abs().max().item()
                                 for t in (999, 499, 19))
    log("export: parity (diffusers load_lora_weights + fuse_lora vs student, UNet outputs at t = 999..19): "
        + ", ".join(f"{k} {v:.3g}" for k, v in res.items()))
    return res


# ---------------------------------------------------------------------------------------------
# stage: eval (diffusers pipelines)

def luminance(img):
    x = img.astype(np.float64) / 255
    return 0.2126 * x[..., 0] + 0.7152 * x[..., 1] + 0.0722 * x[..., 2]


def sharpness(img):
    """Mean Laplacian energy of the luminance (0-1): mean over interior pixels of
    (4 Y[i,j] - Y[i-1,j] - Y[i+1,j] - Y[i,j-1] - Y[i,j+1])^2."""
    y = luminance(img)
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float((lap ** 2).mean())


# DefaultModelTests' statistics, exactly (pixels / 255 as Double)
def sky_luminance(img):
    return float(luminance(img[: img.shape[0] // 3]).mean())


def white_fraction(img):
    return float(((img.astype(np.float64) / 255).min(-1) > 200.0 / 255).mean())


def lower_blue_share(img):
    x = img[img.shape[0] // 2:].astype(np.float64) / 255
    return float((x[..., 2] / np.maximum(x.sum(-1), 1e-3)).mean())


STATS = {"sky luminance": sky_luminance, "near-white fraction": white_fraction, "lower-half blue share": lower_blue_share}


def stage_eval(args):
    """Per model (`--eval-models`: lcm = the exported LoRA fused, LCMScheduler, 4 steps, guidance 1;
    ddim = the teacher with its preset, DDIM 20 steps, guidance 5): a sample grid (seeds
    --grid-seeds x EVAL_PROMPTS, 512x512), its mean sharpness, and the DefaultModelTests checks on
    --check-seeds. Results in eval_<model>.json (the teacher's need computing once) and eval.json."""
    from diffusers import LCMScheduler, StableDiffusionPipeline
    from PIL import Image
    out = os.path.join(args.ckpt_dir, "lcm_samples")
    os.makedirs(out, exist_ok=True)
    preset = T.read_json(os.path.join(REPO, "presets", "landscape-demo.json"))
    size = args.eval_size
    t0 = time.time()
    for which in args.eval_models:
        pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32, safety_checker=None,
                                                       requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        if which == "lcm":
            pipe.load_lora_weights(args.lora_out)
            pipe.fuse_lora()
            pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
            kw = dict(num_inference_steps=args.eval_lcm_steps, guidance_scale=1.0)
        else:  # the shipped DDIM scheduler (zero SNR, trailing) with the preset
            kw = dict(num_inference_steps=preset["steps"], guidance_scale=preset["guidance"])

        def render(prompt, seed):
            g = torch.Generator().manual_seed(seed)
            return np.asarray(pipe(prompt, height=size, width=size, generator=g, **kw).images[0])

        res = dict(model=which, size=size, **kw)
        if which == "lcm":
            res["lora"] = os.path.relpath(args.lora_out, REPO)
            res["lora_step"] = T.read_json(os.path.join(args.ckpt_dir, "export.json"), {}).get("step")
        rows, sharp = [], []
        for seed in args.grid_seeds:
            row = [render(p, seed) for p in EVAL_PROMPTS]
            sharp.append([sharpness(im) for im in row])
            rows.append(np.concatenate(row, 1))
        Image.fromarray(np.concatenate(rows, 0)).save(os.path.join(out, f"grid_{which}.png"))
        res["sharpness"] = float(np.mean(sharp))
        res["sharpness_per_prompt"] = dict(zip(EVAL_PROMPTS, np.mean(sharp, 0).tolist()))
        log(f"eval {which}: grid_{which}.png ({len(args.grid_seeds)} seeds x {len(EVAL_PROMPTS)} prompts), "
            f"sharpness {res['sharpness']:.4e}, {time.time() - t0:.0f} s")
        cache = {}
        for first, second, what in CHECKS:
            wins, vals = 0, []
            for seed in args.check_seeds:
                f = STATS[what]
                ims = [cache.setdefault((p, seed), render(p, seed)) for p in (first, second)]
                a, b = f(ims[0]), f(ims[1])
                wins += int(a > b)
                vals.append([round(a, 4), round(b, 4)])
            res[f"{what}: {first} > {second}"] = dict(wins=wins, of=len(args.check_seeds), values=vals)
            log(f"eval {which}: {what}: '{first}' vs '{second}': {wins}/{len(args.check_seeds)}; "
                + " ".join(f"{a:.3f}/{b:.3f}" for a, b in vals))
        prompts = sorted({p for c in CHECKS for p in c[:2]})
        Image.fromarray(np.concatenate([np.concatenate([cache[(p, s)] for p in prompts], 1)
                                        for s in args.check_seeds[:3]], 0)).save(os.path.join(out, f"checks_{which}.png"))
        res["check_prompts_in_checks_png"] = prompts
        T.write_json(res, os.path.join(args.ckpt_dir, f"eval_{which}.json"))
    lc, dd = (T.read_json(os.path.join(args.ckpt_dir, f"eval_{w}.json")) for w in ("lcm", "ddim"))
    if lc and dd:
        summary = dict(sharpness_lcm=lc["sharpness"], sharpness_ddim=dd["sharpness"],
                       sharpness_ratio=lc["sharpness"] / dd["sharpness"],
                       checks={k: [lc[k]["wins"], dd[k]["wins"]] for k in lc if isinstance(lc[k], dict) and "wins" in lc[k]})
        T.write_json(summary, os.path.join(args.ckpt_dir, "eval.json"))
        log(f"eval: sharpness LCM-{lc['num_inference_steps']} / DDIM-{dd['num_inference_steps']} = "
            f"{summary['sharpness_ratio']:.3f}; checks (LCM, DDIM wins): {summary['checks']}")
    log(f"eval: done in {(time.time() - t0) / 60:.1f} min")


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stages", nargs="*", default=["latents", "train", "export"],
                    choices=["latents", "train", "export", "eval", "all"])
    ap.add_argument("--smoke", action="store_true", help="a ~2-minute end-to-end run in checkpoints/lcm_smoke/")
    ap.add_argument("--model", default=os.path.join(REPO, "models", "landscape-demo"))
    ap.add_argument("--ckpt-dir", default=os.path.join(HERE, "checkpoints", "lcm"))
    ap.add_argument("--lora-out", default=os.path.join(REPO, "models", "lora", "landscape-demo-lcm.safetensors"))
    ap.add_argument("--vocab-dir", default=os.environ.get("CLIP_VOCAB_DIR", "/work/shared/data/clip-vocab"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads; 1 when other jobs share the cores (2 threads then stall at every op)")
    # data (the shipped model's data switches)
    ap.add_argument("--scenes", type=int, default=160)
    ap.add_argument("--max-width", type=int, default=1024)
    ap.add_argument("--shard", type=int, default=32)
    ap.add_argument("--snowy-share", type=float, default=0.75)
    ap.add_argument("--deep-snow", type=int, default=1)
    # training
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--minutes", type=float, default=0, help="guard on training minutes (0: none)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=6e-5)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--guidance-min", type=float, default=5.0, help="teacher CFG scale (diffusers' guidance_scale)")
    ap.add_argument("--guidance-max", type=float, default=5.0, help="> min: uniform in [min, max] per sample")
    ap.add_argument("--loss", choices=["huber", "l2"], default="huber")
    ap.add_argument("--huber-c", type=float, default=0.001)
    ap.add_argument("--bf16", type=int, default=1)
    ap.add_argument("--ckpt-minutes", type=float, default=4.0)
    ap.add_argument("--sample-minutes", type=float, default=15.0)
    ap.add_argument("--log-every", type=int, default=10)
    # eval
    ap.add_argument("--eval-size", type=int, default=512)
    ap.add_argument("--eval-lcm-steps", type=int, default=4)
    ap.add_argument("--grid-seeds", type=int, nargs="*", default=[1, 2, 3, 4, 5])
    ap.add_argument("--check-seeds", type=int, nargs="*", default=list(range(1, 11)))
    ap.add_argument("--eval-models", nargs="*", default=["lcm", "ddim"], choices=["lcm", "ddim"])
    args = ap.parse_args()
    landscapes.SNOWY_SHARE = args.snowy_share
    landscapes.DEEP_SNOW = bool(args.deep_snow)
    if args.smoke:
        args.ckpt_dir = os.path.join(HERE, "checkpoints", "lcm_smoke")
        args.lora_out = os.path.join(args.ckpt_dir, "landscape-demo-lcm.safetensors")
        args.scenes, args.shard, args.steps, args.batch, args.log_every = 3, 2, 6, 2, 2
        args.warmup, args.sample_minutes = 2, 1e9
        args.eval_size, args.grid_seeds, args.check_seeds = 256, [1], [1]
        global EVAL_PROMPTS
        EVAL_PROMPTS = EVAL_PROMPTS[:2]
    os.makedirs(args.ckpt_dir, exist_ok=True)
    torch.set_num_threads(args.threads)
    stages = ["latents", "train", "export", "eval"] if "all" in args.stages else args.stages
    if args.smoke and os.path.exists(os.path.join(args.ckpt_dir, "lcm.pt")):
        for f in ("lcm.pt", "train.done"):  # a smoke run always trains again
            p = os.path.join(args.ckpt_dir, f)
            if os.path.exists(p):
                os.remove(p)
    for s in stages:
        t0 = time.time()
        log(f"=== {s} ===")
        dict(latents=stage_latents, train=stage_train, export=stage_export, eval=stage_eval)[s](args)
        log(f"=== {s} finished in {(time.time() - t0) / 60:.1f} min ===")


if __name__ == "__main__":
    main()
