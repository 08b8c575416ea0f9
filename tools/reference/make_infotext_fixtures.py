#!/usr/bin/env python3
"""Fixtures for PNG Info: A1111 infotext parsing, file hashes and PNG text chunks.

    python3 tools/reference/make_infotext_fixtures.py    # writes Tests/Fixtures/infotext/

Needs only the standard library (plus `safetensors`-free hand-written files). Outputs:

- cases.json: hand-made infotexts in AUTOMATIC1111's exact format, each with the dictionary A1111's
  `parse_generation_parameters` builds before it adds its defaults (its field pattern, the
  "at least 3 fields on the last line" rule, line trimming, `Negative prompt:`, JSON unquoting,
  `WxH` split into `key-1`/`key-2`, empty values dropped), re-implemented here from A1111's
  documented rules; and values with what A1111's `quote` (json.dumps, ensure_ascii=False) makes.
- hashes.json: sha256 (hashlib) of fixture files, whole and A1111's "addnet" LoRA hash (the bytes
  after a safetensors header); two hand-written safetensors files with equal data and different
  metadata (same addnet hash, different whole-file hash).
- PNGs: a ComfyUI-style picture (its `prompt` graph and `workflow`), an A1111-style one with
  non-Latin-1 parameters in iTXt, one with zTXt and compressed iTXt, and hostile ones: a zTXt
  decompression bomb, iTXt that is not UTF-8, a text chunk cut off by the end of the file, a
  chunk whose length points past the end.
"""
import hashlib
import json
import os
import re
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "infotext")

# A1111's field pattern and size pattern (modules/infotext_utils.py)
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def parse(x):
    """A1111's parse, without prompt styles and without the defaults it adds afterwards."""
    res = {}
    prompt, negative, done = "", "", False
    *lines, last = x.strip().split("\n")
    if len(RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done = True
            line = line[16:].strip()
        if done:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    res["Prompt"] = prompt
    res["Negative prompt"] = negative
    for k, v in RE_PARAM.findall(last):
        try:
            if v[0] == '"' and v[-1] == '"':
                v = unquote(v)
            m = RE_IMAGESIZE.match(v)
            if m is not None:
                res[f"{k}-1"] = m.group(1)
                res[f"{k}-2"] = m.group(2)
            else:
                res[k] = v
        except Exception:
            pass  # A1111 prints an error and skips the field (an empty value)
    return res


def quote(text):
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


CASES = [
    # a typical A1111 1.9+ text with a quoted value, LoRA and TI hashes, hires fields
    "masterpiece, best quality, (snowy mountains:1.2), <lora:detail_tweaker:0.5>\n"
    "Negative prompt: EasyNegative, (worst quality:1.4), [blurry]\n"
    'Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 768x512, '
    'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, Clip skip: 2, '
    'Hires upscale: 2, Hires steps: 10, Hires upscaler: "R-ESRGAN 4x+ Anime6B", '
    'Lora hashes: "detail_tweaker: 7c6a0b2ff0a1", TI hashes: "EasyNegative: c74b4e810b03", Version: v1.10.1',
    # multi-line prompt and negative prompt
    "a lake at dawn,\nmist over the water\n\nsoft light\nNegative prompt: text,\nwatermark\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: sd15",
    # no negative prompt, a quoted value with an escaped quote, a newline and a colon
    'red fox in snow\nSteps: 30, Sampler: DDIM, CFG scale: 6.5, Seed: 7, Size: 2048x512, '
    'Note: "he said \\"hi\\", then: left\\nnext line", Eta: 0.3',
    # a last line with fewer than 3 fields belongs to the prompt
    "a castle\nNegative prompt: fog\nSteps: 20, Seed: 5",
    # only two lines, the second not parameters at all
    "first line\nsecond line: with a colon",
    # an unquoted value with a colon, an empty value (dropped), trailing spaces, leading spaces
    "  spaced prompt  \nSteps: 10 , Sampler: Euler, Window weights: gaussian:0.2, Empty: , CFG scale: 5, Size: 64x64",
    # a quoted value not followed by a comma falls back to the unquoted form
    'x\nSteps: 10, Bad: "a, b" c, Sampler: Euler, CFG scale: 5',
    # Unicode prompt and keys with - and /
    "雪山 — café au lait\nSteps: 12, Sampler: Euler, CFG scale: 4, Seed: 3, Size: 1024x576, Token merging ratio: 0.5, A/B-test key: yes",
    # only the parameters line
    "Steps: 20, Sampler: Euler, CFG scale: 7, Seed: 9, Size: 512x768",
    # this program's own fields
    "a calm sea\nSteps: 50, Sampler: DDIM, CFG scale: 7.5, Seed: 11, Size: 4096x512, Model hash: ecb206520c, "
    "Model: tiny-pano, Regions: 2, Bootstrap steps: 10, MultiDiffusion stride: 8, Circular: true, "
    'VAE decode: whole, Window weights: "gaussian:0.2", Precision: bf16',
    # an empty quoted value, repeated key (the last wins), Size with a trailing newline
    'p\nSteps: 1, A: "", Steps: 2, Size: "64x32\\n", Sampler: Euler',
]

QUOTE_VALUES = ["plain", "a, b", "key: value", "line\nbreak", 'say "hi", ok', "back\\slash: x",
                "tab\tand\u0001control, x", "café: ü", "detail_tweaker: 7c6a0b2ff0a1, b: 000000000000"]


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png(*chunks):
    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\x00" + bytes(6) for _ in range(2)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + b"".join(chunks)
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def text(key, value):
    return chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))


def itxt(key, value, compressed=False):
    data = value.encode("utf-8")
    if compressed:
        data = zlib.compress(data)
    return chunk(b"iTXt", key.encode("latin-1") + b"\0" + bytes([1 if compressed else 0, 0]) + b"\0\0" + data)


def ztxt(key, value_bytes):
    return chunk(b"zTXt", key.encode("latin-1") + b"\0\0" + zlib.compress(value_bytes, 9))


def safetensors(metadata):
    header = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, "__metadata__": metadata}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + struct.pack("<4f", 1.0, -2.0, 0.5, 3.25)


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = [{"text": t, "a1111": parse(t)} for t in CASES]
    quotes = [{"value": v, "quoted": quote(v)} for v in QUOTE_VALUES]
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"cases": cases, "quote": quotes}, f, ensure_ascii=False, indent=1)

    # hashes
    for name, meta in [("lora-a.safetensors", {"ss_network_dim": "4"}),
                       ("lora-b.safetensors", {"ss_network_dim": "4", "ss_output_name": "renamed, longer"})]:
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(safetensors(meta))
    files = ["Tests/Fixtures/infotext/lora-a.safetensors", "Tests/Fixtures/infotext/lora-b.safetensors",
             "Tests/Fixtures/models/tiny-pano/unet/diffusion_pytorch_model.safetensors",
             "Tests/Fixtures/models/tiny-pano/model_index.json",
             "Tests/Fixtures/lora/kohya-locon.safetensors", "Tests/Fixtures/lora/peft-attn.safetensors"]
    hashes = []
    for rel in files:
        with open(os.path.join(ROOT, rel), "rb") as f:
            data = f.read()
        whole = hashlib.sha256(data).hexdigest()
        if rel.endswith(".safetensors"):
            n = struct.unpack("<Q", data[:8])[0]
            addnet = hashlib.sha256(data[8 + n:]).hexdigest()
        else:
            addnet = whole
        hashes.append({"file": rel, "sha256": whole, "addnet": addnet})
    with open(os.path.join(OUT, "hashes.json"), "w") as f:
        json.dump(hashes, f, indent=1)

    # PNGs
    comfy_prompt = {
        "3": {"class_type": "KSampler", "inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8.0,
              "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
              "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "beautiful scenery, glass bottle with a galaxy", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": ["10", 0], "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
        "10": {"class_type": "PrimitiveString", "inputs": {"value": "text, watermark"}},
    }
    workflow = {"last_node_id": 10, "nodes": [{"id": i, "type": "X"} for i in range(8)], "links": []}
    pngs = {
        "comfyui.png": png(text("prompt", json.dumps(comfy_prompt)), text("workflow", json.dumps(workflow))),
        "a1111-itxt.png": png(itxt("parameters", CASES[7])),
        "compressed.png": png(ztxt("parameters", CASES[1].encode("latin-1", "replace")),
                              itxt("regions", '[{"prompt":"ü","rect":[0,0,1,1]}]', compressed=True)),
        "bomb.png": png(ztxt("parameters", b"\0" * (17 << 20))),
        "bad-utf8.png": png(chunk(b"iTXt", b"parameters\0\0\0\0\0" + b"\xff\xfe bad \xc3")),
        "truncated-text.png": png(text("parameters", CASES[0]))[:33 + 40],
        "huge-length.png": (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
                            + struct.pack(">I", 0x7FFFFFF0) + b"tEXtparameters\0x" + bytes(16)),
    }
    for name, data in pngs.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    for name in sorted(os.listdir(OUT)):
        path = os.path.join(OUT, name)
        print(f"{name}: {os.path.getsize(path)} bytes, sha256 {hashlib.sha256(open(path, 'rb').read()).hexdigest()[:16]}")


if __name__ == "__main__":
    main()
