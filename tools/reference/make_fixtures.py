#!/usr/bin/env python3
"""Deterministic reference generator for panorama's Swift tests.

Builds two tiny, random-weight Stable Diffusion pipelines offline (no hub access) with diffusers/transformers,
saves them as diffusers folders and dumps golden tensors computed by the PyTorch reference implementation.

    . .venv-ref/bin/activate
    python tools/reference/make_fixtures.py            # writes Tests/Fixtures/{models,golden}
    python tools/reference/make_fixtures.py --out /tmp/fx

Outputs (relative to --out, default <repo>/Tests/Fixtures):
    models/tiny-sd1/   SD-1.x-shaped pipeline, all weights F32 (save_pretrained layout + tokenizer vocab/merges)
    models/tiny-sd2/   SD-2.x-shaped pipeline: text encoder + UNet as *.fp16.safetensors (F16, keys of the text
                       encoder prefixed "text_model."), VAE as BF16 in the non-variant file, v-prediction
    golden/tiny-sd1/, golden/tiny-sd2/   text_encoder / unet / vae goldens + config.json
    golden/scheduler.safetensors, golden/scheduler_cases.json   DDIMScheduler cases

Conventions: float tensors float32, ids int64, NCHW. CPU, fp32, 2 threads, deterministic algorithms, fixed
seeds: reruns with the same package versions produce byte-identical files.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import regex
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import diffusers
import transformers
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "Tests", "Fixtures")
DEFAULT_VOCAB_DIR = "/work/shared/data/clip-vocab"
DEFAULT_IMAGE = "/work/shared/data/images/astronaut.png"

# ------------------------------------------------------------------------------------------------ constants
LONG_PROMPT = ", ".join(["a very long prompt about a quiet seaside village at dusk with boats"] * 8)
PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "",
    "A  Sunlit MOUNTAIN-lake panorama, 360° view; isn't it (HDR) 4k!!",
    LONG_PROMPT,
    "snowy mountains at sunset",
]
COND_INDEX, UNCOND_INDEX = 0, 1
GUIDANCE = 7.5
N_MERGES = 486  # 512 byte tokens + 486 merges + 2 specials = 1000

SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
                    timestep_spacing="leading")

SD1 = dict(
    name="tiny-sd1",
    pad_token="<|endoftext|>",
    text=dict(vocab_size=1000, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
              max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=32,
              bos_token_id=998, eos_token_id=999, pad_token_id=999),
    unet=dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 32, 64),
              down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
              up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
              attention_head_dim=8, cross_attention_dim=32, norm_num_groups=32),
    vae=dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 64, 64),
             down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
             layers_per_block=2, norm_num_groups=32, sample_size=256, scaling_factor=0.18215),
    scheduler=dict(SD_SCHEDULER),
    dtypes=dict(text_encoder="float32", unet="float32", vae="float32"),
    seeds=dict(text_encoder=101, unet=102, vae=103, perturb_text_encoder=111, perturb_unet=112, perturb_vae=113,
               unet_latent=1000, b4_latents=[1001, 1002, 1003, 1004], vae_latent=1100),
    unet_latent_hw=(64, 64), b4_t=500, b4_latent_hw=(32, 32), vae_latent_hw=(32, 32), image_hw=(128, 128),
)
SD2 = dict(
    name="tiny-sd2",
    pad_token="!",
    text=dict(vocab_size=1000, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=61,
              max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=48,
              bos_token_id=998, eos_token_id=999, pad_token_id=0),
    unet=dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64, 64),
              down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
              up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
              attention_head_dim=[2, 4, 4], use_linear_projection=True, upcast_attention=True,
              cross_attention_dim=48, norm_num_groups=16, norm_eps=1e-5),
    vae=dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32, 32),
             down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
             layers_per_block=1, norm_num_groups=8, sample_size=256, scaling_factor=0.13025),
    scheduler=dict(SD_SCHEDULER, prediction_type="v_prediction"),
    dtypes=dict(text_encoder="float16", unet="float16", vae="bfloat16"),
    seeds=dict(text_encoder=201, unet=202, vae=203, perturb_text_encoder=211, perturb_unet=212, perturb_vae=213,
               unet_latent=2000, vae_latent=2100),
    unet_latent_hw=(32, 48), b4_t=None, vae_latent_hw=(24, 40), image_hw=(96, 160),
)

# DDIMScheduler's own defaults, spelled out so every case's "config" in the JSON is complete.
DDIM_DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                     clip_sample=True, clip_sample_range=1.0, set_alpha_to_one=True, steps_offset=0,
                     prediction_type="epsilon", thresholding=False, timestep_spacing="leading",
                     rescale_betas_zero_snr=False)
SCHEDULER_CASES = {
    "sd": dict(DDIM_DEFAULTS, **SD_SCHEDULER),
    "linear_trailing_v": dict(DDIM_DEFAULTS, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                              steps_offset=0, prediction_type="v_prediction", timestep_spacing="trailing"),
    "cos_linspace_sample_clip": dict(DDIM_DEFAULTS, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                                     clip_sample_range=1.0, set_alpha_to_one=True, steps_offset=0,
                                     prediction_type="sample", timestep_spacing="linspace"),
    "sd_eta": dict(DDIM_DEFAULTS, **SD_SCHEDULER),
    "zero_snr": dict(DDIM_DEFAULTS, **dict(SD_SCHEDULER, rescale_betas_zero_snr=True, timestep_spacing="trailing",
                                           prediction_type="v_prediction")),
}
SCHEDULER_ETA = {"sd_eta": 0.7}
SCHEDULER_STEPS = [1, 4, 7, 10, 50]
SCHEDULER_STEP_N = 10
SCHEDULER_STEP_INDICES = [0, 5, 9]  # first, middle, last timestep after set_timesteps(10)
SCHEDULER_SEEDS = dict(sample=3000, model_output=3001, variance_noise=3002, noise=3003)
ADD_NOISE_T = [1, 500, 999]


# ------------------------------------------------------------------------------------------------ tokenizer
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def tiny_vocab_and_merges(vocab_dir, n_merges):
    """CLIP's vocab construction (256 byte chars, the same + '</w>', merges, then the two specials) truncated to
    the first n_merges merges. Checked against the real vocab.json: the tiny ids are a prefix of CLIP's ids."""
    with open(os.path.join(vocab_dir, "merges.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert lines[0].startswith("#version")
    merges = lines[1:1 + n_merges]
    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["".join(m.split()) for m in merges]
    with open(os.path.join(vocab_dir, "vocab.json"), encoding="utf-8") as f:
        real = json.load(f)
    assert all(real[t] == i for i, t in enumerate(tokens)), "tiny vocab is not a prefix of CLIP's vocab"
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer_files(d, vocab, merges):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")


class ReferenceBPE:
    """Independent re-implementation of openai/CLIP simple_tokenizer (minus ftfy), used only to cross-check the
    ids produced by transformers' CLIPTokenizer for the prompts above."""
    PAT = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                        regex.IGNORECASE)

    def __init__(self, vocab, merges):
        self.vocab = vocab
        self.ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
        self.b2u = bytes_to_unicode()

    def bpe(self, token):
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(self.ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(word, word[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            first, second = word[i], word[i + 1]
            new, j = [], 0
            while j < len(word):
                if j < len(word) - 1 and word[j] == first and word[j + 1] == second:
                    new.append(first + second)
                    j += 2
                else:
                    new.append(word[j])
                    j += 1
            word = new
        return word

    def encode(self, text, max_length=77, pad_token="<|endoftext|>"):
        # transformers treats the special tokens -- including SD 2.x's pad token "!" -- as added tokens that are
        # matched in the text before BPE: "4k!!" -> "4k" + "!" + "!" -> [..., 0, 0] rather than the merge "!!</w>".
        specials = sorted({"<|startoftext|>", "<|endoftext|>", pad_token}, key=len, reverse=True)
        text = regex.sub(r"\s+", " ", text).strip().lower()
        ids = []
        for part in regex.split("(" + "|".join(regex.escape(t) for t in specials) + ")", text):
            if part in specials:
                ids.append(self.vocab[part])
                continue
            for tok in regex.findall(self.PAT, part):
                tok = "".join(self.b2u[b] for b in tok.encode("utf-8"))
                ids += [self.vocab[t] for t in self.bpe(tok)]
        pad_id = self.vocab[pad_token]
        ids = [self.vocab["<|startoftext|>"]] + ids[:max_length - 2] + [self.vocab["<|endoftext|>"]]
        return ids + [pad_id] * (max_length - len(ids)), len(ids)


# ------------------------------------------------------------------------------------------------ helpers
def f32(x):
    return x.detach().to(torch.float32).contiguous().clone()


def seeded_randn(shape, seed):
    return torch.randn(tuple(shape), generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


def jsonable(cfg):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def perturb_constant_params(module, seed):
    """Default inits leave norm weights at exactly 1 and biases at exactly 0. Add seeded noise to every parameter
    tensor whose entries are all equal, so a re-implementation that ignores/swaps a scale or bias is caught."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in module.named_parameters():
            if torch.all(p == p.flatten()[0]):
                r = torch.randn(p.shape, generator=g)
                # |delta| >= 0.02 so that rounding to fp16/bf16 can never land back on exactly 1 or 0
                p.add_(0.02 * torch.sign(r) + 0.1 * r)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def round_to_storage_dtype(module, dtype_name):
    """Make the float32 module hold exactly the values that the stored (lower-precision) file will hold."""
    dt = DTYPES[dtype_name]
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(dt).to(torch.float32))


def check_no_constants(module, what):
    for n, p in module.named_parameters():
        if "norm" in n and n.endswith("weight"):
            assert not torch.any(p == 1.0), f"{what}.{n} has a weight exactly 1"
        if n.endswith("bias"):
            assert not torch.any(p == 0.0), f"{what}.{n} has a bias exactly 0"
        assert p.numel() == 1 or not torch.all(p == p.flatten()[0]), f"{what}.{n} is constant"


def save_tensors(path, tensors):
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    assert all(torch.isfinite(v.double()).all() for v in tensors.values()), path
    save_file(tensors, path, metadata={"format": "pt"})
    return {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in tensors.items()}


def load_image(path, hw):
    """Centre crop of the image with the target aspect ratio, resized (Lanczos) to hw, mapped to [-1, 1], NCHW."""
    im = Image.open(path).convert("RGB")
    W, H = im.size
    h, w = hw
    if W * h > H * w:  # too wide
        cw = round(H * w / h)
        box = ((W - cw) // 2, 0, (W - cw) // 2 + cw, H)
    else:
        ch = round(W * h / w)
        box = (0, (H - ch) // 2, W, (H - ch) // 2 + ch)
    im = im.crop(box).resize((w, h), Image.LANCZOS)
    arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None], list(box)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ------------------------------------------------------------------------------------------------ pipelines
def build_models(spec, tok_dir):
    tokenizer = CLIPTokenizer(vocab=os.path.join(tok_dir, "vocab.json"), merges=os.path.join(tok_dir, "merges.txt"),
                              model_max_length=77, pad_token=spec["pad_token"])
    s = spec["seeds"]
    torch.manual_seed(s["text_encoder"])
    text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text"])).eval()
    perturb_constant_params(text_encoder, s["perturb_text_encoder"])
    torch.manual_seed(s["unet"])
    unet = UNet2DConditionModel(**spec["unet"]).eval()
    perturb_constant_params(unet, s["perturb_unet"])
    torch.manual_seed(s["vae"])
    vae = AutoencoderKL(**spec["vae"]).eval()
    perturb_constant_params(vae, s["perturb_vae"])
    for name, m in (("text_encoder", text_encoder), ("unet", unet), ("vae", vae)):
        round_to_storage_dtype(m, spec["dtypes"][name])
        check_no_constants(m, name)
    scheduler = DDIMScheduler(**spec["scheduler"])
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)


def special_tokens_map(pad):
    # transformers 5 no longer writes special_tokens_map.json; the classic SD folders have one.
    return {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad,
            "unk_token": "<|endoftext|>"}


def save_pipeline(pipe, spec, folder, vocab, merges):
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    tok = os.path.join(folder, "tokenizer")
    write_tokenizer_files(tok, vocab, merges)
    with open(os.path.join(tok, "special_tokens_map.json"), "w") as f:
        json.dump(special_tokens_map(spec["pad_token"]), f, indent=2)
        f.write("\n")
    with open(os.path.join(tok, "tokenizer_config.json")) as f:
        assert json.load(f)["pad_token"] == spec["pad_token"]

    d = spec["dtypes"]
    if d["text_encoder"] != "float32":
        os.remove(os.path.join(folder, "text_encoder", "model.safetensors"))
        sd = {"text_model." + k: v.to(DTYPES[d["text_encoder"]]) for k, v in pipe.text_encoder.state_dict().items()}
        save_file(sd, os.path.join(folder, "text_encoder", "model.fp16.safetensors"), metadata={"format": "pt"})
    if d["unet"] != "float32":
        os.remove(os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors"))
        sd = {k: v.to(DTYPES[d["unet"]]) for k, v in pipe.unet.state_dict().items()}
        save_file(sd, os.path.join(folder, "unet", "diffusion_pytorch_model.fp16.safetensors"),
                  metadata={"format": "pt"})
    if d["vae"] != "float32":  # non-variant file name, bf16 content
        sd = {k: v.to(DTYPES[d["vae"]]) for k, v in pipe.vae.state_dict().items()}
        save_file(sd, os.path.join(folder, "vae", "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})


def verify_saved_pipeline(pipe, spec, folder):
    """diffusers must load the folder, and the loaded weights must be exactly the weights used for the goldens."""
    kw = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if "float16" in spec["dtypes"].values():
        kw["variant"] = "fp16"
    loaded = StableDiffusionPipeline.from_pretrained(folder, **kw)
    for name in ("text_encoder", "unet", "vae"):
        ref, got = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert ref.keys() == got.keys(), name
        for k in ref:
            assert torch.equal(ref[k], got[k].float()), f"{name}.{k} differs after reload"
    ids_a = pipe.tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True).input_ids
    ids_b = loaded.tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True).input_ids
    assert ids_a == ids_b
    assert loaded.tokenizer.pad_token == spec["pad_token"]
    for k, v in pipe.scheduler.config.items():
        if k.startswith("_"):
            continue
        assert loaded.scheduler.config[k] == v or (isinstance(v, tuple) and list(v) == loaded.scheduler.config[k]), k
    return {n: str(next(getattr(loaded, n).parameters()).dtype).replace("torch.", "")
            for n in ("text_encoder", "unet", "vae")}


# ------------------------------------------------------------------------------------------------ goldens
@torch.no_grad()
def make_goldens(pipe, spec, out, vocab, merges, image_path):
    os.makedirs(out, exist_ok=True)
    tok, te, unet, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae
    s = spec["seeds"]
    files = {}

    # ---- text encoder
    ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    ids = ids.to(torch.int64)
    ref = ReferenceBPE(vocab, merges)
    n_tokens = []
    for i, p in enumerate(PROMPTS):
        r, n = ref.encode(p, pad_token=spec["pad_token"])
        assert ids[i].tolist() == r, (p, ids[i].tolist(), r)
        n_tokens.append(n)
    assert len(tok(LONG_PROMPT).input_ids) > 77
    o = te(ids, output_hidden_states=True)
    # transformers 5: CLIPTextModel *is* the text transformer (no .text_model submodule)
    final_ln = te.text_model.final_layer_norm if hasattr(te, "text_model") else te.final_layer_norm
    penultimate = final_ln(o.hidden_states[-2])
    files["text_encoder.safetensors"] = save_tensors(os.path.join(out, "text_encoder.safetensors"), {
        "input_ids": ids, "last_hidden_state": f32(o.last_hidden_state), "penultimate": f32(penultimate),
        "pooler_output": f32(o.pooler_output)})
    first_eos = (ids == 999).int().argmax(-1)
    assert torch.equal(o.pooler_output, o.last_hidden_state[torch.arange(len(PROMPTS)), first_eos])
    # cross-check against the pipeline's own prompt encoding
    pe, ne = pipe.encode_prompt(PROMPTS[COND_INDEX], "cpu", 1, True, PROMPTS[UNCOND_INDEX])
    assert torch.allclose(pe[0], o.last_hidden_state[COND_INDEX], atol=1e-6)
    assert torch.allclose(ne[0], o.last_hidden_state[UNCOND_INDEX], atol=1e-6)
    # diffusers 0.42.1's clip_skip path calls text_encoder.text_model.final_layer_norm, which transformers 5's
    # CLIPTextModel no longer has (AttributeError). Alias it (plain attribute, not a submodule) for the check.
    aliased = not hasattr(te, "text_model")
    if aliased:
        object.__setattr__(te, "text_model", te)
    pe2, _ = pipe.encode_prompt(PROMPTS[COND_INDEX], "cpu", 1, False, clip_skip=1)
    if aliased:
        object.__delattr__(te, "text_model")
    assert torch.allclose(pe2[0], penultimate[COND_INDEX], atol=1e-6)

    # ---- UNet (CFG layout: [uncond, cond], same latent twice)
    h, w = spec["unet_latent_hw"]
    x = seeded_randn((1, 4, h, w), s["unet_latent"])
    ehs = f32(torch.stack([o.last_hidden_state[UNCOND_INDEX], o.last_hidden_state[COND_INDEX]]))
    u = {"latent_model_input": torch.cat([x, x]), "encoder_hidden_states": ehs}
    for t in (999, 1):
        eps = unet(u["latent_model_input"], torch.tensor(t), encoder_hidden_states=ehs).sample
        u[f"eps_t{t}"] = f32(eps)
        u[f"eps_cfg_t{t}"] = f32(eps[0:1] + GUIDANCE * (eps[1:2] - eps[0:1]))
    if spec["b4_t"] is not None:
        xb = torch.cat([seeded_randn((1, 4) + tuple(spec["b4_latent_hw"]), sd) for sd in s["b4_latents"]])
        eb = torch.cat([ehs, ehs])
        u["b4_input"], u["b4_encoder_hidden_states"] = xb, eb
        u["b4_eps"] = f32(unet(xb, torch.tensor(spec["b4_t"]), encoder_hidden_states=eb).sample)
        # batch independence: rows 0,1 of the batch-4 call equal a batch-2 call on the same rows
        e2 = unet(xb[:2], torch.tensor(spec["b4_t"]), encoder_hidden_states=eb[:2]).sample
        assert torch.allclose(e2, u["b4_eps"][:2], atol=1e-5)
    files["unet.safetensors"] = save_tensors(os.path.join(out, "unet.safetensors"), u)

    # ---- VAE
    sf = vae.config.scaling_factor
    z = seeded_randn((1, 4) + tuple(spec["vae_latent_hw"]), s["vae_latent"])
    decoded = vae.decode(z / sf).sample
    img, crop_box = load_image(image_path, spec["image_hw"])
    dist = vae.encode(img).latent_dist
    files["vae.safetensors"] = save_tensors(os.path.join(out, "vae.safetensors"), {
        "latent": z, "decoded": f32(decoded), "image": img, "encoded_mean": f32(dist.mean),
        "encoded_std": f32(dist.std)})

    cfg = {
        "model": f"models/{spec['name']}",
        "prompts": PROMPTS,
        "token_counts_incl_bos_eos_after_truncation": n_tokens,
        "cond_index": COND_INDEX, "uncond_index": UNCOND_INDEX,
        "guidance_scale": GUIDANCE,
        "tokenizer": {"max_length": 77, "padding": "max_length", "truncation": True, "pad_token": spec["pad_token"],
                      "pad_token_id": tok.pad_token_id,
                      "note": "special tokens (incl. a pad token '!') are matched in the text before BPE"},
        "text_encoder": {"penultimate": "final_layer_norm(hidden_states[-2]) (diffusers encode_prompt, clip_skip=1)",
                         "pooler_output": "last_hidden_state at the first eos (id 999)"},
        "unet": {"timesteps": [999, 1], "latent_seed": s["unet_latent"], "latent_shape": [1, 4, h, w],
                 "encoder_hidden_states": "[last_hidden_state[uncond], last_hidden_state[cond]]"},
        "vae": {"scaling_factor": sf, "latent_seed": s["vae_latent"],
                "decoded": "vae.decode(latent / scaling_factor).sample",
                "image_source": os.path.basename(image_path), "image_crop_box_ltrb": crop_box,
                "image_resample": "PIL LANCZOS", "image_mapping": "uint8 / 127.5 - 1"},
        "seeds": s,
        "weights_dtypes": spec["dtypes"],
        "note": "goldens computed in float32 from weights rounded to the stored dtype",
        "versions": versions(),
    }
    if spec["b4_t"] is not None:
        cfg["unet"]["b4"] = {"timestep": spec["b4_t"], "latent_seeds": s["b4_latents"],
                             "latent_shape": [4, 4] + list(spec["b4_latent_hw"]),
                             "encoder_hidden_states": "[uncond, cond, uncond, cond]"}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return files


def make_scheduler_goldens(out):
    t = {}
    sample = seeded_randn((1, 4, 8, 8), SCHEDULER_SEEDS["sample"])
    model_output = seeded_randn((1, 4, 8, 8), SCHEDULER_SEEDS["model_output"])
    t["sample"], t["model_output"] = sample, model_output
    cases = {}
    for name, kwargs in SCHEDULER_CASES.items():
        s = DDIMScheduler(**kwargs)
        t[f"{name}.alphas_cumprod"] = f32(s.alphas_cumprod)
        t[f"{name}.final_alpha_cumprod"] = f32(torch.as_tensor(s.final_alpha_cumprod).reshape(1))
        for n in SCHEDULER_STEPS:
            s.set_timesteps(n)
            t[f"{name}.timesteps_{n}"] = s.timesteps.to(torch.int64).clone()
        s.set_timesteps(SCHEDULER_STEP_N)
        eta = SCHEDULER_ETA.get(name, 0.0)
        noise = None
        if eta > 0:
            noise = seeded_randn((1, 4, 8, 8), SCHEDULER_SEEDS["variance_noise"])
            t[f"{name}.variance_noise"] = noise
        calls = []
        for idx in SCHEDULER_STEP_INDICES:
            ts = int(s.timesteps[idx])
            r = s.step(model_output, ts, sample, eta=eta, variance_noise=noise)
            key = f"{name}.step{idx}"
            t[key + "_prev_sample"] = f32(r.prev_sample)
            t[key + "_pred_original_sample"] = f32(r.pred_original_sample)
            calls.append({"num_inference_steps": SCHEDULER_STEP_N, "timestep": ts, "eta": eta, "key": key})
        cases[name] = {"config": kwargs, "steps": SCHEDULER_STEPS, "step_calls": calls}
        if eta > 0:
            cases[name]["variance_noise"] = f"{name}.variance_noise"
        if name == "sd":
            noise_t = seeded_randn((1, 4, 8, 8), SCHEDULER_SEEDS["noise"])
            t["noise"] = noise_t
            for tt in ADD_NOISE_T:
                t[f"sd.add_noise_t{tt}"] = f32(s.add_noise(sample, noise_t, torch.tensor([tt], dtype=torch.int64)))
            cases[name]["add_noise"] = {"timesteps": ADD_NOISE_T, "keys": [f"sd.add_noise_t{tt}" for tt in ADD_NOISE_T],
                                        "original_samples": "sample", "noise": "noise"}
    assert all(torch.isfinite(v.double()).all() for v in t.values())
    info = save_tensors(os.path.join(out, "scheduler.safetensors"), t)
    # top level: case name -> case only (shared tensors "sample"/"model_output"/"noise" are documented in README)
    with open(os.path.join(out, "scheduler_cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
        f.write("\n")
    return {"scheduler.safetensors": info}


def versions():
    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "safetensors": __import__("safetensors").__version__}


# ------------------------------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output root (default: %(default)s)")
    ap.add_argument("--vocab-dir", default=DEFAULT_VOCAB_DIR, help="dir with CLIP's vocab.json + merges.txt")
    ap.add_argument("--image", default=DEFAULT_IMAGE, help="RGB image used for the VAE encode goldens")
    ap.add_argument("--no-verify", action="store_true", help="skip the from_pretrained reload checks")
    args = ap.parse_args()

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()

    vocab, merges = tiny_vocab_and_merges(args.vocab_dir, N_MERGES)
    assert len(vocab) == 1000
    tok_src = tempfile.mkdtemp(prefix="tiny_clip_tok_")
    write_tokenizer_files(tok_src, vocab, merges)

    golden_root = os.path.join(args.out, "golden")
    os.makedirs(golden_root, exist_ok=True)
    summary = {}
    for spec in (SD1, SD2):
        pipe = build_models(spec, tok_src)
        folder = os.path.join(args.out, "models", spec["name"])
        save_pipeline(pipe, spec, folder, vocab, merges)
        if not args.no_verify:
            summary[spec["name"] + " loaded dtypes"] = verify_saved_pipeline(pipe, spec, folder)
        gdir = os.path.join(golden_root, spec["name"])
        if os.path.isdir(gdir):
            shutil.rmtree(gdir)
        summary[spec["name"]] = make_goldens(pipe, spec, gdir, vocab, merges, args.image)
    summary["scheduler"] = make_scheduler_goldens(golden_root)
    shutil.rmtree(tok_src)

    # verify every safetensors file loads back
    for root in (os.path.join(args.out, "models"), golden_root):
        for d, _, fs in os.walk(root):
            for n in fs:
                if n.endswith(".safetensors"):
                    load_file(os.path.join(d, n))
    print(json.dumps({k: v for k, v in summary.items() if k.endswith("loaded dtypes")}))
    for d, _, fs in sorted(w for r in (os.path.join(args.out, "models"), golden_root) for w in os.walk(r)):
        for n in sorted(fs):
            p = os.path.join(d, n)
            print(f"{sha256(p)}  {os.path.getsize(p):>9}  {os.path.relpath(p, args.out)}")


if __name__ == "__main__":
    main()
