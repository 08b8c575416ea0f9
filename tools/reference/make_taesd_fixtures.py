#!/usr/bin/env python3
"""TAESD (diffusers' AutoencoderTiny) fixtures for panorama's AutoencoderTiny parity and loader tests.

A tiny random AutoencoderTiny with TAESD's layout (encoder blocks (1, 3, 3, 3), decoder blocks
(3, 3, 3, 1), ReLU, nearest 2x upsampling, 4 latent channels) but 16 channels per stage instead of
64, seeded, written in the two layouts panorama loads:

- `models/tiny-taesd/diffusers/`: `save_pretrained(safe_serialization=True)` (config.json +
  diffusion_pytorch_model.safetensors, names `encoder.layers.N…` / `decoder.layers.N…`);
- `models/tiny-taesd/separate/`: madebyollin's separate files as AUTOMATIC1111 downloads them, the
  state dicts of TAESD's own `nn.Sequential`s: `taesd_decoder.safetensors` (names one index higher
  than diffusers', since TAESD's decoder starts with a parameter-free clamp) and `taesd_encoder.pth`
  (torch.save zip; same indices as diffusers'), so the sibling lookup also crosses extensions;
  plus a copy of the folder's config.json (real A1111 folders have none and load with TAESD's
  default config, which this 16-channel model does not match).

Weights are stored as F16 to keep the fixture small; the goldens are float32 computations with
the stored (rounded) values. Conv weights are normal with standard deviation 0.7·√(2/fan_in), biases U(−0.1, 0.1), so
the random decoder's output spans a good part of [-1, 1] instead of collapsing to −1.

The renaming is checked, not assumed: an independent re-implementation of madebyollin's
`Encoder`/`Decoder` `nn.Sequential` (written here from TAESD's published architecture) loads the
separate files with `load_state_dict(strict=True)` and must reproduce diffusers' outputs (decoder
output mapped from [0, 1] to [-1, 1], encoder input from [-1, 1] to [0, 1]). The diffusers folder is
reloaded with `AutoencoderTiny.from_pretrained` and must reproduce the goldens exactly.

Goldens (`golden/taesd/taesd.safetensors`, F32):
- `latents` [1, 4, 16, 24]: torch.randn(generator=manual_seed(11));
- `decoded` [1, 3, 128, 192]: `AutoencoderTiny.decode(latents).sample`;
- `image_row0` [1, 3, 1, 192]: first row of the encode input, torch.rand([1, 3, 128, 192],
  generator=manual_seed(12)) * 2 − 1 (the tests regenerate the image with TorchGenerator(seed: 12)
  and check this row);
- `encoded` [1, 4, 16, 24]: `AutoencoderTiny.encode(image).latents`.

    . .venv-ref/bin/activate
    python tools/reference/make_taesd_fixtures.py                      # writes Tests/Fixtures/...
    python tools/reference/make_taesd_fixtures.py --full-size /tmp/taesd-full   # + a full-size
        # random TAESD (64 channels) for timing, written outside the repository

Deterministic: CPU, float32, torch.set_num_threads(2), fixed seeds.
"""
import argparse
import hashlib
import json
import os
import shutil

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderTiny

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))

CHANNELS = 16


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() == 4:
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5 * 0.7)
            else:
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * 0.1)


# --- madebyollin's TAESD as nn.Sequential, re-implemented from its published architecture ---

class SoftClamp(nn.Module):
    def forward(self, x):
        return 3 * torch.tanh(x / 3)


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1))
        self.skip = nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x):
        return self.fuse(self.conv(x) + self.skip(x))


def sequential_encoder(c, latent=4):
    layers = [nn.Conv2d(3, c, 3, padding=1), ResBlock(c)]
    for _ in range(3):
        layers += [nn.Conv2d(c, c, 3, padding=1, stride=2, bias=False), ResBlock(c), ResBlock(c), ResBlock(c)]
    layers.append(nn.Conv2d(c, latent, 3, padding=1))
    return nn.Sequential(*layers)


def sequential_decoder(c, latent=4):
    layers = [SoftClamp(), nn.Conv2d(latent, c, 3, padding=1), nn.ReLU()]
    for _ in range(3):
        layers += [ResBlock(c), ResBlock(c), ResBlock(c), nn.Upsample(scale_factor=2), nn.Conv2d(c, c, 3, padding=1, bias=False)]
    layers += [ResBlock(c), nn.Conv2d(c, 3, 3, padding=1)]
    return nn.Sequential(*layers)


def to_separate(state):
    """diffusers names -> the two nn.Sequential state dicts (decoder indices + 1)."""
    decoder, encoder = {}, {}
    for key, value in state.items():
        part, _, index_rest = key.partition(".layers.")
        index, _, rest = index_rest.partition(".")
        if part == "decoder":
            decoder[f"{int(index) + 1}.{rest}"] = value
        elif part == "encoder":
            encoder[f"{int(index)}.{rest}"] = value
        else:
            raise ValueError(key)
    return decoder, encoder


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures"))
    ap.add_argument("--full-size", help="also write a full-size random TAESD folder here (not for git)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)

    model = AutoencoderTiny(encoder_block_out_channels=(CHANNELS,) * 4, decoder_block_out_channels=(CHANNELS,) * 4)
    randomize(model, 2026)
    model = model.to(torch.float16).to(torch.float32).eval()  # the stored values

    latents = torch.randn([1, 4, 16, 24], generator=torch.Generator().manual_seed(11))
    image = torch.rand([1, 3, 128, 192], generator=torch.Generator().manual_seed(12)) * 2 - 1
    with torch.no_grad():
        decoded = model.decode(latents).sample
        encoded = model.encode(image).latents
    print(f"decoded: min {decoded.min():.3f} max {decoded.max():.3f} std {decoded.std():.3f}")
    print(f"encoded: min {encoded.min():.3f} max {encoded.max():.3f} std {encoded.std():.3f}")

    models = os.path.join(args.out, "models", "tiny-taesd")
    folder = os.path.join(models, "diffusers")
    separate = os.path.join(models, "separate")
    golden = os.path.join(args.out, "golden", "taesd")
    for d in (folder, separate, golden):
        os.makedirs(d, exist_ok=True)

    model.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    model.to(torch.float32)
    state = load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    assert all(v.dtype == torch.float16 for v in state.values())
    decoder_sd, encoder_sd = to_separate(state)
    save_file(decoder_sd, os.path.join(separate, "taesd_decoder.safetensors"))
    torch.save(encoder_sd, os.path.join(separate, "taesd_encoder.pth"))
    shutil.copyfile(os.path.join(folder, "config.json"), os.path.join(separate, "config.json"))

    save_file({"latents": latents.contiguous(), "decoded": decoded.contiguous(), "encoded": encoded.contiguous(),
               "image_row0": image[:, :, :1, :].contiguous()}, os.path.join(golden, "taesd.safetensors"))
    with open(os.path.join(golden, "config.json"), "w") as f:
        json.dump({"latents_seed": 11, "image_seed": 12, "image": "torch.rand([1, 3, 128, 192]) * 2 - 1",
                   "weights_seed": 2026, "channels": CHANNELS}, f, indent=2)
        f.write("\n")

    # Checks: diffusers reloads the folder to the same outputs; the Sequential re-implementation
    # loads the separate files strictly and agrees with diffusers.
    with torch.no_grad():
        again = AutoencoderTiny.from_pretrained(folder, torch_dtype=torch.float32).eval()
        assert torch.equal(again.decode(latents).sample, decoded)
        assert torch.equal(again.encode(image).latents, encoded)
        dec = sequential_decoder(CHANNELS)
        dec.load_state_dict({k: v.float() for k, v in load_file(os.path.join(separate, "taesd_decoder.safetensors")).items()},
                            strict=True)
        enc = sequential_encoder(CHANNELS)
        enc.load_state_dict({k: v.float() for k, v in torch.load(os.path.join(separate, "taesd_encoder.pth")).items()},
                            strict=True)
        d = (dec(latents) * 2 - 1 - decoded).abs().max().item()
        e = (enc((image + 1) / 2) - encoded).abs().max().item()
        print(f"separate layout vs diffusers: decode {d:.2e}, encode {e:.2e}")
        assert d < 1e-5 and e < 1e-5

    total = 0
    for root in (models, golden):
        for dirpath, _, files in sorted(os.walk(root)):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                size = os.path.getsize(path)
                total += size
                print(f"{sha(path)} {size:8d} {os.path.relpath(path, args.out)}")
    print(f"total {total} bytes")

    if args.full_size:
        full = AutoencoderTiny()
        randomize(full, 7)
        full.save_pretrained(args.full_size, safe_serialization=True)
        print(f"full-size random TAESD in {args.full_size}")


if __name__ == "__main__":
    main()
