#!/usr/bin/env python3
"""Panorama (MultiDiffusion) + torch-CPU-randn fixtures for panorama's Swift tests.

Builds a cheap SD-1.x-shaped random-weight pipeline (``models/tiny-pano``), runs diffusers'
StableDiffusionPanoramaPipeline with it (``golden/tiny-pano``) and dumps torch CPU ``randn``/``rand`` draws
(``golden/randn.safetensors``), checking them against a pure-numpy re-implementation of torch's CPU generator.

    . .venv-ref/bin/activate
    python tools/reference/make_panorama_fixtures.py             # writes Tests/Fixtures/{models,golden}/...
    python tools/reference/make_panorama_fixtures.py --out /tmp/fx

Outputs (relative to --out, default <repo>/Tests/Fixtures):
    models/tiny-pano/             diffusers folder (save_pretrained, safetensors, all F32) + tokenizer vocab/merges
    golden/tiny-pano/             pano_*.safetensors, views.json, config.json
    golden/randn.safetensors      torch.randn / torch.rand draws (see golden/README.md)

CPU, fp32, 2 threads, deterministic algorithms, fixed seeds: reruns produce byte-identical files. Timings are
printed only (never written), so they do not break byte-identity.
"""
import argparse
import ctypes
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_fixtures as mf  # noqa: E402  (helpers: tokenizer files, perturbation, saving, verification)

import diffusers  # noqa: E402
import diffusers.schedulers.scheduling_ddim as ddim_module  # noqa: E402
import transformers  # noqa: E402
from diffusers import StableDiffusionPanoramaPipeline  # noqa: E402

# ------------------------------------------------------------------------------------------------ constants
PANO = dict(
    name="tiny-pano",
    pad_token="<|endoftext|>",
    text=dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
              max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=32,
              bos_token_id=998, eos_token_id=999, pad_token_id=999),
    unet=dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
              down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
              up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
              attention_head_dim=4, cross_attention_dim=32, norm_num_groups=16),
    vae=dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16, 32, 32),
             down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
             layers_per_block=1, norm_num_groups=8, sample_size=512, scaling_factor=0.18215),
    scheduler=dict(mf.SD_SCHEDULER),
    dtypes=dict(text_encoder="float32", unet="float32", vae="float32"),
    seeds=dict(text_encoder=301, unet=302, vae=303, perturb_text_encoder=311, perturb_unet=312, perturb_vae=313),
)

PROMPT = "snowy mountains at sunset"
NEGATIVE_PROMPT = ""
HEIGHT, WIDTH = 512, 1024
STEPS = 8
GUIDANCE = 7.5
SEED = 1234
LATENTS_IN_SEED = 77
ETA = 0.5
WINDOW, STRIDE = 64, 8            # get_views defaults used by __call__ (latent units)
DECODE_PAD = 8                    # decode_latents_with_padding default (latent columns per side)

# name -> (pipeline kwargs that differ from the base run, keys to store)
FULL_KEYS = ("initial_latent", "latents_step0", "final_latent", "image_u8", "timesteps")
RUNS = {
    "pano_plain": (dict(circular_padding=False), FULL_KEYS),
    "pano_circular": (dict(circular_padding=True), FULL_KEYS),
    "pano_latents_in": (dict(circular_padding=False, latents="latents_in"), FULL_KEYS + ("latents_in",)),
    "pano_eta": (dict(circular_padding=False, eta=ETA), ("initial_latent", "final_latent", "image_u8", "timesteps")),
    "pano_batch4": (dict(circular_padding=False, view_batch_size=4), FULL_KEYS),
    "pano_guidance1": (dict(circular_padding=False, guidance_scale=1.0), FULL_KEYS),
}
VIEW_SIZES = [(512, 512), (512, 1024), (512, 2048), (512, 4096), (512, 4000), (768, 1024), (640, 1536), (1024, 512)]

# ((shape, seed), key) for golden/randn.safetensors
RANDN_CASES = [((16,), 0), ((17,), 1), ((5,), 2), ((1, 4, 64, 128), 1234), ((3, 7, 11), 99), ((1, 4, 8, 8), 2 ** 40 + 3)]
SEQ5 = (5, [(20,), (33,)])            # one generator seeded 5, two consecutive randn draws -> seq5_a, seq5_b
SEQ2_SMALL = (2, [(5,), (3,)])        # n < 16 twice from one generator: shows the cached Box-Muller partner
RAND6 = (6, (10,))                    # torch.rand


def randn_key(shape, seed):
    return f"randn_s{seed}_{'x'.join(map(str, shape))}"


# ------------------------------------------------------------------------------------------------ torch CPU RNG
# Pure numpy re-implementation of torch's CPU generator (at::mt19937 + aten/src/ATen/native/cpu/
# DistributionTemplates.h + avx_mathfun.h), checked bit for bit against torch below.
MT_N, MT_M = 624, 397
_U32 = np.uint32


class TorchCPUGenerator:
    """torch.Generator("cpu").manual_seed(seed): MT19937 initialised with init_genrand(seed & 0xFFFFFFFF)
    (at::mt19937 keeps only the low 32 bits of the 64-bit seed), plus the generator's cached double normal."""

    def __init__(self, seed):
        s = [int(seed) & 0xFFFFFFFF]
        for j in range(1, MT_N):
            s.append((1812433253 * (s[-1] ^ (s[-1] >> 30)) + j) & 0xFFFFFFFF)
        self.state = np.array(s, dtype=np.uint32)
        self.pos = MT_N  # first output triggers a twist
        self.next_double_normal = None  # CPUGeneratorImpl::next_double_normal_sample_ (reset by manual_seed)

    def _twist(self):
        st = self.state

        def f(a, b):
            y = (a & _U32(0x80000000)) | (b & _U32(0x7FFFFFFF))
            return (y >> _U32(1)) ^ np.where((y & _U32(1)) != 0, _U32(0x9908B0DF), _U32(0))

        i = 0
        while i < MT_N - 1:  # blocks of <= N-M so every st[(i+M) % N] read has the value the serial loop sees
            hi = min(i + (MT_N - MT_M), MT_N - 1)
            idx = np.arange(i, hi)
            st[idx] = st[(idx + MT_M) % MT_N] ^ f(st[idx], st[idx + 1])
            i = hi
        st[MT_N - 1] = st[MT_M - 1] ^ f(st[MT_N - 1:], st[:1])[0]
        self.pos = 0

    def random(self, n):
        """n consecutive 32-bit outputs (CPUGeneratorImpl::random())."""
        out = np.empty(n, dtype=np.uint32)
        k = 0
        while k < n:
            if self.pos == MT_N:
                self._twist()
            take = min(n - k, MT_N - self.pos)
            y = self.state[self.pos:self.pos + take].copy()
            y ^= y >> _U32(11)
            y ^= (y << _U32(7)) & _U32(0x9D2C5680)
            y ^= (y << _U32(15)) & _U32(0xEFC60000)
            y ^= y >> _U32(18)
            out[k:k + take] = y
            self.pos += take
            k += take
        return out

    def uniform_f32(self, n):
        """uniform_real_distribution<float>(0, 1): (random() & 0xFFFFFF) * 2^-24 (exact in float32)."""
        return (self.random(n) & _U32(0xFFFFFF)).astype(np.float32) * np.float32(2.0 ** -24)

    def uniform_f64(self):
        """uniform_real_distribution<double>(0, 1): random64() = (r1 << 32) | r2, masked to 53 bits, * 2^-53."""
        r1, r2 = (int(v) for v in self.random(2))
        return (((r1 << 32) | r2) & ((1 << 53) - 1)) * 2.0 ** -53


F32 = np.float32


def fma32(a, b, c):
    """Correctly rounded float32 fused multiply-add (vfmadd): a*b is exact in float64; the float64 sum is made
    round-to-odd (exact TwoSum error as sticky bit), so the final rounding to float32 is a single correct one."""
    a, b, c = (np.asarray(v, dtype=np.float32).astype(np.float64) for v in (a, b, c))
    p = a * b
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    fix = (err != 0) & ((s.view(np.int64) & 1) == 0)
    s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(np.float32)


LOG_P = [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
         -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1]


def cephes_log256(x):
    """avx_mathfun.h log256_ps, lane-wise, with the FMA contractions of the shipped x86-64 wheel."""
    x = np.maximum(x.astype(F32), np.array(0x00800000, np.uint32).view(F32))  # min_norm_pos
    xi = x.view(np.uint32)
    e = ((xi >> _U32(23)).astype(np.int32) - np.int32(0x7F)).astype(F32) + F32(1)
    x = ((xi & _U32(0x807FFFFF)) | F32(0.5).view(np.uint32)).view(F32)  # mantissa in [0.5, 1)
    mask = x < F32(0.707106781186547524)  # SQRTHF
    tmp = np.where(mask, x, F32(0))
    x = x - F32(1)
    e = e - np.where(mask, F32(1), F32(0))
    x = x + tmp
    z = x * x
    y = np.full_like(x, F32(LOG_P[0]))
    for p in LOG_P[1:]:
        y = fma32(y, x, F32(p))                    # y = y*x + p        (fused)
    y = y * x
    y = fma32(y, z, e * F32(-2.12194440e-4))       # y = y*z + e*q1     (fused; e*q1 rounded)
    y = fma32(z, F32(-0.5), y)                     # y = y - z*0.5      (fused)
    x = x + y
    return fma32(e, F32(0.693359375), x)           # x = x + e*q2       (fused)


def cephes_sincos256(x):
    """avx_mathfun.h sincos256_ps, lane-wise, with the FMA contractions of the shipped x86-64 wheel."""
    xi = x.astype(F32).view(np.uint32)
    sign_sin = xi & _U32(0x80000000)
    x = (xi & _U32(0x7FFFFFFF)).view(F32)
    j = (x * F32(1.27323954473516)).astype(np.int32)   # 4/pi, cvttps (truncate)
    j = (j + 1) & ~np.int32(1)
    y = j.astype(F32)
    sign_sin = sign_sin ^ ((j & 4).astype(np.uint32) << _U32(29))
    sign_cos = (~(j - 2) & 4).astype(np.uint32) << _U32(29)
    poly = (j & 2) == 0
    x = fma32(y, F32(-0.78515625), x)                  # extended-precision range reduction, all fused
    x = fma32(y, F32(-2.4187564849853515625e-4), x)
    x = fma32(y, F32(-3.77489497744594108e-8), x)
    z = x * x
    yc = fma32(F32(2.443315711809948e-5), z, F32(-1.388731625493765e-3))
    yc = fma32(yc, z, F32(4.166664568298827e-2))
    yc = yc * z
    yc = fma32(yc, z, -(z * F32(0.5)))                 # (y*z) - (z*0.5): fmsub with z*0.5 rounded first
    yc = yc + F32(1)
    ys = fma32(F32(-1.9515295891e-4), z, F32(8.3321608736e-3))
    ys = fma32(ys, z, F32(-1.6666654611e-1))
    ys = ys * z
    ys = fma32(ys, x, x)
    s = np.where(poly, ys, yc)
    c = np.where(poly, yc, ys)
    return (s.view(np.uint32) ^ sign_sin).view(F32), (c.view(np.uint32) ^ sign_cos).view(F32)


def normal_fill_16(u):
    """normal_fill_16_AVX2 on rows of 16 uniforms: pairs (j, j+8), j < 8."""
    radius = np.sqrt(F32(-2) * cephes_log256(F32(1) - u[:, :8]))
    theta = F32(2.0 * math.pi) * u[:, 8:]               # _mm256_set1_ps(2.0f * pi<double>) = 6.2831855f
    s, c = cephes_sincos256(theta)
    return np.concatenate([radius * c, radius * s], axis=1)  # fmadd(n, std=1, mean=0) is exact


def np_randn_f32(gen, shape):
    """torch.randn(shape, generator=gen, dtype=torch.float32) on a CPU with AVX2 (x86-64 wheel)."""
    n = int(np.prod(shape))
    if n >= 16:
        out = gen.uniform_f32(n)
        m = n // 16 * 16
        out[:m] = normal_fill_16(out[:m].reshape(-1, 16)).reshape(-1)
        if n % 16:  # the last 16 outputs are recomputed from 16 *fresh* uniforms
            out[n - 16:] = normal_fill_16(gen.uniform_f32(16).reshape(1, 16)).reshape(-1)
        return out.reshape(shape)
    out = np.empty(n, np.float32)
    for i in range(n):  # at::normal_distribution<double>, one element at a time, with the generator's cache
        if gen.next_double_normal is not None:
            v, gen.next_double_normal = gen.next_double_normal, None
        else:
            u1 = gen.uniform_f64()
            u2 = gen.uniform_f64()
            r = math.sqrt(-2.0 * math.log1p(-u2))
            theta = 2.0 * math.pi * u1
            gen.next_double_normal = r * math.sin(theta)
            v = r * math.cos(theta)
        out[i] = np.float32(v)
    return out.reshape(shape)


def np_rand_f32(gen, shape):
    return gen.uniform_f32(int(np.prod(shape))).reshape(shape)


def bits_equal(a, b):
    a, b = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def libm_default_path_check():
    """With ATEN_CPU_CAPABILITY=default (no AVX2, e.g. aarch64 wheels) torch takes the scalar normal_fill path:
    glibc logf/cosf/sinf, theta = float(2*pi*(double)u). Checked in a subprocess; returns a summary dict."""
    try:
        libm = ctypes.CDLL("libm.so.6")
    except OSError:
        return {"checked": False, "reason": "no libm.so.6"}
    for fn in ("logf", "cosf", "sinf"):
        getattr(libm, fn).restype = ctypes.c_float
        getattr(libm, fn).argtypes = [ctypes.c_float]
    code = ("import sys,torch;torch.set_num_threads(2);"
            "sys.stdout.buffer.write(torch.backends.cpu.get_cpu_capability().encode()+b'|'+"
            "torch.randn((1000,),generator=torch.Generator().manual_seed(7)).numpy().tobytes())")
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    raw = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True).stdout
    cap, data = raw.split(b"|", 1)
    ref = np.frombuffer(data, np.float32)
    g = TorchCPUGenerator(7)
    u = g.uniform_f32(1000)

    def fill(v):
        o = v.copy()
        for j in range(8):
            radius = np.sqrt(F32(-2) * F32(libm.logf(float(F32(1) - v[j]))))
            theta = float(F32(2.0 * math.pi * float(v[j + 8])))
            o[j] = radius * F32(libm.cosf(theta))
            o[j + 8] = radius * F32(libm.sinf(theta))
        return o

    out = u.copy()
    for i in range(0, 1000 - 15, 16):
        out[i:i + 16] = fill(u[i:i + 16])
    out[1000 - 16:] = fill(g.uniform_f32(16))
    avx2 = np_randn_f32(TorchCPUGenerator(7), (1000,))
    return {"checked": True, "capability": cap.decode(), "bit_exact": bool(bits_equal(out, ref)),
            "max_abs_diff_vs_avx2_path": float(np.abs(avx2 - ref).max()),
            "elements_differing_from_avx2_path": int((avx2.view(np.uint32) != ref.view(np.uint32)).sum())}


def _partner_after(seed, n):
    """The double normal cached in the generator after randn((n,)) with n < 16 odd, via the numpy model."""
    g = TorchCPUGenerator(seed)
    np_randn_f32(g, (n,))
    return g.next_double_normal


def make_randn(out_path):
    t, checks = {}, {}

    def check(key, ref, mine):
        same = bits_equal(ref.numpy(), mine)
        diff = float(np.abs(ref.numpy() - mine).max()) if ref.numel() else 0.0
        assert same, f"{key}: numpy re-implementation differs from torch (max abs diff {diff})"
        checks[key] = "bit-exact"

    for shape, seed in RANDN_CASES:
        k = randn_key(shape, seed)
        t[k] = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
        check(k, t[k], np_randn_f32(TorchCPUGenerator(seed), shape))
    for name, (seed, shapes) in (("seq5", SEQ5), ("seq2_small", SEQ2_SMALL)):
        g, ng = torch.Generator("cpu").manual_seed(seed), TorchCPUGenerator(seed)
        for suffix, shape in zip("ab", shapes):
            k = f"{name}_{suffix}"
            t[k] = torch.randn(shape, generator=g, dtype=torch.float32)
            check(k, t[k], np_randn_f32(ng, shape))
    seed, shape = RAND6
    t["rand_seed6"] = torch.rand(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
    check("rand_seed6", t["rand_seed6"], np_rand_f32(TorchCPUGenerator(seed), shape))

    # facts the README states, asserted here
    assert torch.equal(t[randn_key((1, 4, 8, 8), 2 ** 40 + 3)],
                       torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(3)))
    g = torch.Generator().manual_seed(2)
    a = torch.randn((5,), generator=g)
    g.manual_seed(2)
    assert torch.equal(torch.randn((5,), generator=g), a), "manual_seed must reset the cached normal"
    assert torch.equal(t["seq2_small_a"], a)
    # the cached partner survives a >= 16 draw (that path neither reads nor clears it)
    torch.randn((20,), generator=g)
    assert torch.randn((1,), generator=g).item() == float(np.float32(_partner_after(2, 5)))
    # prefix property: randn(17) = block 0 of randn(32) for element 0 only; elements 1..16 are the recomputed tail
    r17 = torch.randn((17,), generator=torch.Generator().manual_seed(1))
    r32 = torch.randn((32,), generator=torch.Generator().manual_seed(1))
    assert r17[0] == r32[0] and not torch.any(r17[1:16] == r32[1:16])
    # ... but multiples of 16 are prefixes of each other
    r48 = torch.randn((48,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(r32, r48[:32])
    # a big draw, to make the bit-exactness claim stronger than the fixture shapes alone
    big = torch.randn((1 << 20,), generator=torch.Generator().manual_seed(42)).numpy()
    assert bits_equal(big, np_randn_f32(TorchCPUGenerator(42), (1 << 20,)))
    checks["randn_s42_1048576 (not stored)"] = "bit-exact"
    # the numpy MT19937 agrees with numpy's own legacy-seeded MT19937
    bg = np.random.MT19937()
    bg._legacy_seeding(1234)
    assert np.array_equal(bg.random_raw(2000).astype(np.uint32), TorchCPUGenerator(1234).random(2000))

    info = mf.save_tensors(out_path, t)
    return info, checks


# ------------------------------------------------------------------------------------------------ panorama runs
def coverage(views, lat_w, lat_h, circular):
    cnt = np.zeros((lat_h, lat_w), np.int64)
    for h0, h1, w0, w1 in views:
        cols = np.arange(w0, w1) % lat_w if circular else np.arange(w0, min(w1, lat_w))
        cnt[h0:min(h1, lat_h)][:, cols] += 1
    uncovered_cols = [int(c) for c in np.where(cnt.max(0) == 0)[0]]
    uncovered_rows = [int(r) for r in np.where(cnt.max(1) == 0)[0]]
    return {"num_views": len(views), "count_min": int(cnt.min()), "count_max": int(cnt.max()),
            "uncovered_latent_columns": uncovered_cols, "uncovered_latent_rows": uncovered_rows}


def make_views(pipe):
    views, notes = {}, {}
    for h, w in VIEW_SIZES:
        for circ in (False, True):
            key = f"{h}x{w}{'_circular' if circ else ''}"
            try:
                v = pipe.get_views(h, w, window_size=WINDOW, stride=STRIDE, circular_padding=circ)
            except Exception as e:  # noqa: BLE001 -- recorded, not expected
                notes[key] = {"get_views_raised": f"{type(e).__name__}: {e}"}
                continue
            views[key] = [[int(a) for a in t] for t in v]
            notes[key] = coverage(views[key], w // 8, h // 8, circ)
    return views, notes


def circular_tall_call(pipe):
    """__call__ with circular_padding and height > 512: diffusers indexes the denoised *view* (64 rows) with the
    panorama rows h_start:h_end, which breaks as soon as a wrapping view has h_start > 0."""
    try:
        pipe(prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, height=768, width=1024, num_inference_steps=1,
             guidance_scale=GUIDANCE, circular_padding=True, generator=torch.Generator("cpu").manual_seed(SEED),
             output_type="latent")
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return None


class Recorder:
    """prepare_latents hook + callback_on_step_end: initial latent, latents after step 0, after the last step."""

    def __init__(self, pipe):
        self.pipe, self.rec = pipe, {}

    def __enter__(self):
        orig = type(self.pipe).prepare_latents

        def prepare(*a, **k):
            lat = orig(self.pipe, *a, **k)
            self.rec["initial_latent"] = mf.f32(lat)
            return lat

        self.pipe.prepare_latents = prepare
        return self

    def on_step(self, p, i, t, kw):
        if i == 0:
            self.rec["latents_step0"] = mf.f32(kw["latents"])
        self.rec["last"] = mf.f32(kw["latents"])
        self.rec.setdefault("callback_timesteps", []).append(int(t))
        return {}

    def __exit__(self, *exc):
        del self.pipe.prepare_latents


def run_pipeline(pipe, kwargs, output_type):
    with Recorder(pipe) as r:
        out = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(SEED), output_type=output_type,
                   callback_on_step_end=r.on_step).images
    return out, r.rec


def to_u8(img_np):
    """output_type="np" image (float32 NHWC in [0,1]) -> uint8 exactly as diffusers' numpy_to_pil does."""
    x = img_np.astype(np.float32) * np.float32(255)
    ties = int(np.sum(x - np.floor(x) == 0.5))
    return torch.from_numpy(np.ascontiguousarray(np.round(x).astype(np.uint8))), ties


@torch.no_grad()
def make_pano_goldens(pipe, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    sf = pipe.vae.config.scaling_factor
    base = dict(prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, height=HEIGHT, width=WIDTH,
                num_inference_steps=STEPS, guidance_scale=GUIDANCE, view_batch_size=1)
    latents_in = torch.randn((1, 4, HEIGHT // 8, WIDTH // 8), generator=torch.Generator().manual_seed(LATENTS_IN_SEED))
    files, results, timings, ties = {}, {}, {}, {}

    # record every DDIM variance-noise draw (eta > 0) to document the generator order
    ddim_draws = []
    orig_randn_tensor = ddim_module.randn_tensor

    def recording_randn_tensor(*a, **k):
        x = orig_randn_tensor(*a, **k)
        ddim_draws.append(x.clone())
        return x

    for name, (over, keys) in RUNS.items():
        kw = dict(base, **over)
        if kw.get("latents") == "latents_in":
            kw["latents"] = latents_in.clone()
        ddim_module.randn_tensor = recording_randn_tensor
        try:
            t0 = time.perf_counter()
            img, rec = run_pipeline(pipe, kw, "np")
            timings[name] = round(time.perf_counter() - t0, 2)
            draws = list(ddim_draws)
            ddim_draws.clear()
            if name == "pano_plain":
                # output_type="latent" returns exactly the latents after the last step (checked once; the loop
                # is the same code for every output_type, only the decode differs)
                lat, rec_l = run_pipeline(pipe, kw, "latent")
                assert torch.equal(lat, rec["last"]) and torch.equal(rec_l["initial_latent"], rec["initial_latent"])
        finally:
            ddim_module.randn_tensor = orig_randn_tensor
        lat = rec["last"]
        timesteps = pipe.scheduler.timesteps.to(torch.int64).clone()
        assert rec["callback_timesteps"] == timesteps.tolist()
        u8, ties[name] = to_u8(img)
        r = {"initial_latent": rec["initial_latent"], "latents_step0": rec["latents_step0"],
             "final_latent": mf.f32(lat), "image_u8": u8, "timesteps": timesteps, "latents_in": latents_in}
        results[name] = dict(r, image_np=img, draws=draws)
        t = {k: r[k] for k in keys}
        if name == "pano_plain":  # prompt embeddings as used by the loop: [uncond (""), cond]
            pe, ne = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE_PROMPT)
            t["encoder_hidden_states"] = mf.f32(torch.cat([ne, pe]))
        files[f"{name}.safetensors"] = mf.save_tensors(os.path.join(out_dir, f"{name}.safetensors"), t)

    # ---- checks of the documented behaviour
    plain, circ = results["pano_plain"], results["pano_circular"]
    seed_latent = mf.seeded_randn((1, 4, HEIGHT // 8, WIDTH // 8), SEED)
    for n in ("pano_plain", "pano_circular", "pano_eta", "pano_batch4", "pano_guidance1"):
        assert torch.equal(results[n]["initial_latent"], seed_latent), n  # init_noise_sigma == 1 for DDIM
    assert bits_equal(seed_latent.numpy(), np_randn_f32(TorchCPUGenerator(SEED), (1, 4, HEIGHT // 8, WIDTH // 8)))
    assert torch.equal(results["pano_latents_in"]["initial_latent"], latents_in)
    # decode: plain = vae.decode(z / sf) (float32 division by 0.18215f); circular = decode_latents_with_padding,
    # which scales by *multiplying* with float32(1 / 0.18215) = 5.4899807f (differs from z / sf in the last bit)
    img_plain = pipe.vae.decode(plain["final_latent"] / sf).sample
    z = (1 / sf) * circ["final_latent"]
    zp = torch.cat([z[..., -DECODE_PAD:], z, z[..., :DECODE_PAD]], dim=-1)
    dec = pipe.vae.decode(zp).sample
    crop = pipe.vae_scale_factor * DECODE_PAD
    img_circ = dec[..., crop:-crop]
    for img, res in ((img_plain, plain), (img_circ, circ)):
        np_img = (img / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()
        assert np.array_equal(np_img, res["image_np"]), "image conversion differs from the pipeline"
    assert torch.equal(pipe.decode_latents_with_padding(circ["final_latent"]), img_circ)
    # eta: one randn of shape [view_batch, 4, 64, 64] per view batch per step, after the initial latent
    eta = results["pano_eta"]
    n_views = len(pipe.get_views(HEIGHT, WIDTH))
    assert len(eta["draws"]) == STEPS * n_views, len(eta["draws"])
    g = torch.Generator("cpu").manual_seed(SEED)
    torch.randn((1, 4, HEIGHT // 8, WIDTH // 8), generator=g)
    ng = TorchCPUGenerator(SEED)
    np_randn_f32(ng, (1, 4, HEIGHT // 8, WIDTH // 8))
    for d in eta["draws"]:
        assert torch.equal(d, torch.randn(tuple(d.shape), generator=g)), "unexpected variance-noise order"
        assert bits_equal(d.numpy(), np_randn_f32(ng, tuple(d.shape)))
    for n in RUNS:
        if n != "pano_eta":
            assert not results[n]["draws"], n
    b4 = results["pano_batch4"]
    batch4 = {
        "max_abs_diff_final_latent_vs_plain": float((b4["final_latent"] - plain["final_latent"]).abs().max()),
        "max_abs_diff_latents_step0_vs_plain": float((b4["latents_step0"] - plain["latents_step0"]).abs().max()),
        "max_abs_final_latent_plain": float(plain["final_latent"].abs().max()),
        "max_abs_diff_image_np_vs_plain": float(np.abs(b4["image_np"] - plain["image_np"]).max()),
        "image_u8_pixels_differing_from_plain": int((b4["image_u8"] != plain["image_u8"]).sum()),
        "image_u8_max_abs_diff_vs_plain": int((b4["image_u8"].int() - plain["image_u8"].int()).abs().max()),
        "bitwise_equal_final_latent": bool(torch.equal(b4["final_latent"], plain["final_latent"])),
        "view_batches": [len(pipe.get_views(HEIGHT, WIDTH)[i:i + 4]) for i in range(0, n_views, 4)],
    }
    g1 = results["pano_guidance1"]
    guidance1 = {"max_abs_diff_final_latent_vs_plain": float((g1["final_latent"] - plain["final_latent"]).abs().max())}
    tall = circular_tall_call(pipe)
    assert tall is not None, "circular_padding with height > 512 unexpectedly worked"

    views, view_notes = make_views(pipe)
    with open(os.path.join(out_dir, "views.json"), "w") as f:
        json.dump(views, f, separators=(",", ":"))
        f.write("\n")

    tok = pipe.tokenizer
    ids = {p: tok(p, padding="max_length", max_length=77, truncation=True).input_ids for p in (PROMPT, NEGATIVE_PROMPT)}
    cfg = {
        "model": "models/tiny-pano",
        "pipeline": "diffusers StableDiffusionPanoramaPipeline (pipelines/deprecated/stable_diffusion_panorama), "
                    "built with safety_checker=None, feature_extractor=None, requires_safety_checker=False",
        "prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT,
        "prompt_ids_nonpad": [i for i in ids[PROMPT] if i != 999] + [999],
        "negative_prompt_ids_nonpad": [i for i in ids[NEGATIVE_PROMPT] if i != 999] + [999],
        "tokenizer_padding": "max_length 77 with <|endoftext|> (999)",
        "height": HEIGHT, "width": WIDTH, "latent_shape": [1, 4, HEIGHT // 8, WIDTH // 8],
        "num_inference_steps": STEPS, "timesteps": plain["timesteps"].tolist(), "guidance_scale": GUIDANCE,
        "view_batch_size": 1, "eta": 0.0, "generator": f'torch.Generator("cpu").manual_seed({SEED}), fresh per call',
        "scheduler": mf.jsonable(PANO["scheduler"]), "init_noise_sigma": float(pipe.scheduler.init_noise_sigma),
        "runs": {
            "pano_plain": "circular_padding=False",
            "pano_circular": "circular_padding=True",
            "pano_latents_in": f"circular_padding=False, latents=torch.randn((1,4,64,128), generator="
                               f"torch.Generator().manual_seed({LATENTS_IN_SEED})) (stored as latents_in; "
                               "initial_latent == latents_in * init_noise_sigma == latents_in)",
            "pano_eta": f"circular_padding=False, eta={ETA}; variance noise drawn from the same generator",
            "pano_batch4": "circular_padding=False, view_batch_size=4 (views batched [4, 4, 1])",
            "pano_guidance1": "circular_padding=False, guidance_scale=1.0 (no CFG: only the cond half is run, "
                              "negative_prompt is not encoded)",
        },
        "keys": {
            "initial_latent": "latent the loop starts from (prepare_latents output), F32 [1,4,64,128]",
            "latents_step0": "latents after step 0 (callback_on_step_end, i.e. after the MultiDiffusion average)",
            "final_latent": 'pipe(..., output_type="latent").images == latents after the last step',
            "image_u8": 'uint8 NHWC [1,512,1024,3] = np.round(pipe(..., output_type="np").images * 255) '
                        "(float32 multiply, numpy round-half-to-even)",
            "timesteps": "int64 scheduler.timesteps",
            "latents_in": "pano_latents_in only",
            "encoder_hidden_states": "pano_plain only: [uncond(\"\"), cond] prompt embeddings, F32 [2,77,32]",
        },
        "image_conversion": "decoded = vae.decode(final_latent / 0.18215f).sample (plain, float32 division) or "
                            "decode_latents_with_padding(final_latent) (circular); image_np = (decoded * 0.5 + 0.5)"
                            ".clamp(0, 1).permute(0,2,3,1) float32; image_u8 = round(image_np * 255) as uint8",
        "image_u8_exact_half_ties": ties,
        "circular_decode": {
            "padding_latent_columns_each_side": DECODE_PAD,
            "padded_latent": "cat([z[..., -8:], z, z[..., :8]], dim=-1) with z = latent * float32(1 / 0.18215) "
                             "(= 5.4899807f; the non-circular path instead divides: latent / 0.18215f -- the two "
                             "differ in the last bit) -> [1,4,64,144]",
            "decoded_width_px": (WIDTH // 8 + 2 * DECODE_PAD) * 8,
            "cropped_px_each_side": crop,
            "output": "decoded[..., 64:-64] -> [1,3,512,1024]; the VAE itself is not circular (zero padding), "
                      "the wrapped columns only give it context",
        },
        "multidiffusion": {
            "window_latent": WINDOW, "stride_latent": STRIDE,
            "views_512x1024": n_views, "views_512x1024_circular": len(pipe.get_views(HEIGHT, WIDTH, circular_padding=True)),
            "per_step": "value/count zeroed; for each view batch: crop (circular: wrap columns past the right edge "
                        "to the left edge), CFG batch = latents.repeat_interleave(2) -> [v0,v0,v1,v1,..] with "
                        "embeddings [neg,pos]*vb, eps = u + g (c - u) with u = [::2], c = [1::2], DDIM step on the "
                        "crop, add into value/count; latents = where(count > 0, value / count, value)",
            "eta_noise": "DDIM draws randn_tensor([view_batch, 4, 64, 64], generator) inside every scheduler.step "
                         "call: order = initial latent, then for each step, for each view batch in order. "
                         "Verified against one sequential torch generator and the numpy re-implementation",
            "scheduler_state": "DDIM has no per-step state; the pipeline's per-batch deepcopy of scheduler.__dict__ "
                               "changes nothing",
        },
        "batch4_vs_plain": batch4,
        "guidance1": guidance1,
        "views_json": f"get_views(h, w, window_size={WINDOW}, stride={STRIDE}, circular_padding=c) as "
                      "[h_start, h_end, w_start, w_end] in latent units; keys 'HxW' and 'HxW_circular'",
        "views_coverage": view_notes,
        "views_notes": [
            "get_views raised for no combination",
            "non-circular: latent columns/rows that no view covers get count 0 and are set to 0 every step "
            "(e.g. 512x4000: latent width 500, columns 496..499)",
            "circular: num_blocks_width = latent_width // stride; windows past the right edge wrap; "
            "rows are never wrapped",
            f"__call__ with circular_padding=True and height > 512 fails in diffusers 0.42.1: {tall}",
        ],
        "quirks": [
            "the pipeline's do_classifier_free_guidance property is hard-coded False (so guidance_rescale is never "
            "applied); CFG is controlled by the local guidance_scale > 1",
            "UNet attention_head_dim=4 means 4 heads (head size 64/4 = 16), diffusers' legacy naming",
        ],
        "versions": mf.versions(),
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return files, timings


# ------------------------------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=mf.DEFAULT_OUT, help="output root (default: %(default)s)")
    ap.add_argument("--vocab-dir", default=mf.DEFAULT_VOCAB_DIR, help="dir with CLIP's vocab.json + merges.txt")
    args = ap.parse_args()

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    t_start = time.perf_counter()

    golden_root = os.path.join(args.out, "golden")
    os.makedirs(golden_root, exist_ok=True)

    # ---- randn (independent of the model)
    randn_info, randn_checks = make_randn(os.path.join(golden_root, "randn.safetensors"))
    default_path = libm_default_path_check()
    print("randn: numpy re-implementation bit-exact with torch for", ", ".join(randn_checks))
    print("randn default (non-AVX2) path:", json.dumps(default_path))

    # ---- model
    vocab, merges = mf.tiny_vocab_and_merges(args.vocab_dir, mf.N_MERGES)
    tok_src = tempfile.mkdtemp(prefix="tiny_pano_tok_")
    mf.write_tokenizer_files(tok_src, vocab, merges)
    sd = mf.build_models(PANO, tok_src)
    shutil.rmtree(tok_src)
    folder = os.path.join(args.out, "models", PANO["name"])
    mf.save_pipeline(sd, PANO, folder, vocab, merges)
    mf.verify_saved_pipeline(sd, PANO, folder)
    ref = mf.ReferenceBPE(vocab, merges)
    for p in (PROMPT, NEGATIVE_PROMPT):
        assert sd.tokenizer(p, padding="max_length", max_length=77, truncation=True).input_ids == ref.encode(p)[0]

    pipe = StableDiffusionPanoramaPipeline.from_pretrained(folder, safety_checker=None, feature_extractor=None,
                                                           requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    for n in ("text_encoder", "unet", "vae"):
        a, b = getattr(sd, n).state_dict(), getattr(pipe, n).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), n
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"

    # ---- panorama goldens
    gdir = os.path.join(golden_root, PANO["name"])
    if os.path.isdir(gdir):
        shutil.rmtree(gdir)
    _, timings = make_pano_goldens(pipe, gdir)

    for d, _, fs in os.walk(args.out):
        for n in fs:
            if n.endswith(".safetensors") and (PANO["name"] in d or n == "randn.safetensors"):
                load_file(os.path.join(d, n))
    for name, tn in timings.items():
        print(f"run {name}: {tn:.2f} s (output_type=np, incl. decode)")
    total = 0
    paths = [os.path.join(golden_root, "randn.safetensors")]
    for root in (folder, gdir):
        for d, _, fs in sorted(os.walk(root)):
            paths += [os.path.join(d, n) for n in sorted(fs)]
    for p in paths:
        total += os.path.getsize(p)
        print(f"{mf.sha256(p)}  {os.path.getsize(p):>9}  {os.path.relpath(p, args.out)}")
    print(f"total {total / 1e6:.2f} MB, {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
