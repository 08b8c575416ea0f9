#!/usr/bin/env python3
"""A1111-syntax encoding, textual-inversion and panorama parity fixtures for panorama's Swift tests.

    /work/.venv-ref/bin/python tools/reference/make_prompt_encoding_fixtures.py

Writes under Tests/Fixtures/golden/prompts/:
    embeddings/      textual-inversion files for the tiny models (32 wide): tinyemb.safetensors (A1111 one
                     tensor `emb_params`, 3 vectors), neg.safetensors (diffusers {"<neg>": [32]}, 1 vector),
                     ptstyle.safetensors (`string_to_param.*` [2, 32], the name a flattened A1111 .pt has)
    embeddings-bad/  files that must be refused: wide (48 wide), nanvec (a NaN), empty (0 bytes),
                     sdxl (clip_l + clip_g), twotensors (two unrelated tensors)
    encode.safetensors + encode.json   text embeddings: the A1111 reference (a1111_prompt.encode, padded
                     with empty chunks where a case says so) on tiny-pano and tiny-sd2; and diffusers'
                     encode_prompt after load_textual_inversion (emphasis none) on tiny-pano
    pano.safetensors + pano.json       final latents of diffusers' StableDiffusionPanoramaPipeline on
                     tiny-pano given the reference's prompt_embeds / negative_prompt_embeds, and (ti_diffusers,
                     emphasis none) given prompt strings after load_textual_inversion

CPU, fp32, 2 threads, fixed seeds; reruns give identical files.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import a1111_prompt as ap  # noqa: E402

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import StableDiffusionPanoramaPipeline  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

FIX = os.path.join(REPO, "Tests", "Fixtures")
OUT = os.path.join(FIX, "golden", "prompts")

LONG = ("(snowy mountains:1.3) at [sunset], a ((frozen lake)) below, pine forests on the slopes, "
        "low clouds in the valleys, [[distant villages]], warm light on the peaks, cold blue shadows, "
        "a winding road, (reflections:0.8) in the water, wide panorama, highly detailed BREAK "
        "golden hour, (dramatic sky:1.2), soft haze, \\(film grain\\)")
NEG = "[[blurry]], (low quality:1.2), watermark"
EMB_PROMPT = "a tinyemb landscape, (neg:1.2) sky BREAK ptstyle, [tinyemb]"
EMB_NEG = "neg, (ptstyle:0.9)"

# (key, model, prompt, clip_skip, pad_to_chunks): A1111 reference embeddings.
A1111_CASES = [
    ("pano_long", "tiny-pano", LONG, 0, None),
    ("pano_long_skip1", "tiny-pano", LONG, 1, None),
    ("pano_neg_padded", "tiny-pano", NEG, 0, "pano_long"),
    ("pano_empty", "tiny-pano", "", 0, None),
    ("pano_embeddings", "tiny-pano", EMB_PROMPT, 0, None),
    ("pano_embeddings_neg", "tiny-pano", EMB_NEG, 0, None),
    ("pano_comma_wrap", "tiny-pano", " ".join(["word"] * 60) + ", tinyemb " + " ".join(["more"] * 30), 0, None),
    ("sd2_long", "tiny-sd2", LONG, 0, None),
    ("sd2_short_skip1", "tiny-sd2", "(snow:1.4), [fog]", 1, None),
]
# (key, prompt): diffusers encode_prompt after load_textual_inversion, emphasis none.
DIFFUSERS_TI_CASES = [
    ("ti_prompt", "a tinyemb photo of neg mountains"),
    ("ti_negative", "neg, ptstyle blurry"),
    ("ti_plain", "a photo of snowy mountains"),
]
# (key, prompt, negative, clip_skip)
PANO_CASES = [
    ("long_break", LONG, NEG, 0),
    ("long_break_skip1", LONG, NEG, 1),
    ("embeddings", EMB_PROMPT, EMB_NEG, 0),
]
PANO = dict(height=512, width=640, steps=8, guidance=7.5, seed=1234)


def load_encoder(name):
    folder = os.path.join(FIX, "models", name)
    variant = "fp16" if name == "tiny-sd2" else None
    te = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), variant=variant, dtype=torch.float32)
    tok = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
    return te.eval(), tok


def make_embeddings(te):
    table = te.embeddings.token_embedding.weight.detach()
    scale = float(table.std()) * 2
    g = torch.Generator().manual_seed(2101)
    good = {
        "tinyemb": {"emb_params": torch.randn(3, 32, generator=g) * scale},
        "neg": {"<neg>": torch.randn(32, generator=g) * scale},
        "ptstyle": {"string_to_param.*": torch.randn(2, 32, generator=g) * scale},
    }
    d = os.path.join(OUT, "embeddings")
    os.makedirs(d, exist_ok=True)
    for name, tensors in good.items():
        save_file(tensors, os.path.join(d, name + ".safetensors"))
    bad_dir = os.path.join(OUT, "embeddings-bad")
    os.makedirs(bad_dir, exist_ok=True)
    nan = torch.randn(2, 32, generator=g)
    nan[1, 5] = float("nan")
    bad = {
        "wide": {"emb_params": torch.randn(1, 48, generator=g)},
        "nanvec": {"emb_params": nan},
        "sdxl": {"clip_l": torch.randn(1, 32, generator=g), "clip_g": torch.randn(1, 64, generator=g)},
        "twotensors": {"a": torch.randn(1, 32, generator=g), "b": torch.randn(1, 32, generator=g)},
    }
    for name, tensors in bad.items():
        save_file(tensors, os.path.join(bad_dir, name + ".safetensors"))
    open(os.path.join(bad_dir, "empty.safetensors"), "wb").close()
    vectors = {}
    for name, tensors in good.items():
        v = next(iter(tensors.values()))
        vectors[name] = v.reshape(-1, 32).float()
    return vectors


@torch.no_grad()
def main():
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()

    encoders = {n: load_encoder(n) for n in ("tiny-pano", "tiny-sd2")}
    embs = make_embeddings(encoders["tiny-pano"][0])

    tensors, cases = {}, []
    for key, model, prompt, skip, pad_like in A1111_CASES:
        te, tok = encoders[model]
        use = embs if model == "tiny-pano" else {}
        z = ap.encode(te, tok, prompt, use, clip_skip=skip)
        if pad_like:
            z = ap.pad_to(z, tensors[pad_like].shape[1] // 77, ap.encode(te, tok, "", {}, clip_skip=skip))
        tensors[key] = z.contiguous()
        cases.append(dict(key=key, model=model, prompt=prompt, clip_skip=skip, emphasis="a1111",
                          pad_to_chunks=(tensors[pad_like].shape[1] // 77) if pad_like else None,
                          chunks=z.shape[1] // 77))

    # diffusers' own textual inversion (one 77-token window, literal text).
    folder = os.path.join(FIX, "models", "tiny-pano")
    ti = StableDiffusionPanoramaPipeline.from_pretrained(folder, safety_checker=None, feature_extractor=None,
                                                         requires_safety_checker=False)
    for name in ("tinyemb", "neg", "ptstyle"):
        ti.load_textual_inversion(os.path.join(OUT, "embeddings", name + ".safetensors"), token=name)
    for key, prompt in DIFFUSERS_TI_CASES:
        if key == "ti_negative":
            # Through the negative-prompt path of encode_prompt.
            _, pe = ti.encode_prompt("x", "cpu", 1, True, negative_prompt=prompt)
        else:
            pe, _ = ti.encode_prompt(prompt, "cpu", 1, False)
        tensors[key] = pe.contiguous()
        cases.append(dict(key=key, model="tiny-pano", prompt=prompt, clip_skip=0, emphasis="none",
                          pad_to_chunks=None, chunks=1))
    save_file(tensors, os.path.join(OUT, "encode.safetensors"))
    with open(os.path.join(OUT, "encode.json"), "w") as f:
        json.dump(dict(cases=cases, embeddings_dir="embeddings",
                       note="tools/reference/make_prompt_encoding_fixtures.py"), f, indent=1, ensure_ascii=False)
        f.write("\n")

    # Panoramas from the reference's embeddings.
    pipe = StableDiffusionPanoramaPipeline.from_pretrained(folder, safety_checker=None, feature_extractor=None,
                                                           requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    te, tok = pipe.text_encoder, pipe.tokenizer
    pano, pano_cases = {}, []
    for key, prompt, negative, skip in PANO_CASES:
        cond = ap.encode(te, tok, prompt, embs, clip_skip=skip)
        uncond = ap.encode(te, tok, negative, embs, clip_skip=skip)
        empty = ap.encode(te, tok, "", {}, clip_skip=skip)
        n = max(cond.shape[1], uncond.shape[1]) // 77
        cond, uncond = ap.pad_to(cond, n, empty), ap.pad_to(uncond, n, empty)
        out = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, height=PANO["height"], width=PANO["width"],
                   num_inference_steps=PANO["steps"], guidance_scale=PANO["guidance"],
                   generator=torch.Generator("cpu").manual_seed(PANO["seed"]), output_type="latent").images
        pano[key] = out.float().contiguous()
        pano_cases.append(dict(key=key, prompt=prompt, negative_prompt=negative, clip_skip=skip, chunks=n,
                               emphasis="a1111"))
    # diffusers' own textual inversion end to end (--emphasis none): prompt strings to the TI pipeline.
    ti.set_progress_bar_config(disable=True)
    prompt, negative = DIFFUSERS_TI_CASES[0][1], DIFFUSERS_TI_CASES[1][1]
    out = ti(prompt=prompt, negative_prompt=negative, height=PANO["height"], width=PANO["width"],
             num_inference_steps=PANO["steps"], guidance_scale=PANO["guidance"],
             generator=torch.Generator("cpu").manual_seed(PANO["seed"]), output_type="latent").images
    pano["ti_diffusers"] = out.float().contiguous()
    pano_cases.append(dict(key="ti_diffusers", prompt=prompt, negative_prompt=negative, clip_skip=0, chunks=1,
                           emphasis="none"))
    save_file(pano, os.path.join(OUT, "pano.safetensors"))
    with open(os.path.join(OUT, "pano.json"), "w") as f:
        json.dump(dict(cases=pano_cases, **PANO, model="tiny-pano", scheduler="DDIM (the model's)",
                       note="diffusers StableDiffusionPanoramaPipeline(prompt_embeds=..., negative_prompt_embeds=..., "
                            "output_type='latent'), view_batch_size 1, stride 8, eta 0"),
                  f, indent=1, ensure_ascii=False)
        f.write("\n")
    for c in cases + pano_cases:
        print(c["key"], c["chunks"], "chunks")


if __name__ == "__main__":
    main()
