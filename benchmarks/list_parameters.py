"""Writes sd15/parameters.json: every tensor name and shape that diffusers' UNet2DConditionModel,
AutoencoderKL and AutoencoderTiny (TAESD, sd15/taesd) and transformers' CLIPTextModel keep in their state_dict for the configs in sd15/.
Built on the meta device, so nothing is allocated. The Swift benchmark generates its random-weight
folder from this listing. Run with the reference venv: /work/.venv-ref/bin/python list_parameters.py
"""
import json
import pathlib

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

here = pathlib.Path(__file__).resolve().parent / "sd15"
with torch.device("meta"):
    models = {
        "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(here / "unet")),
        "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(here / "vae")),
        "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(here / "text_encoder")),
        "taesd": AutoencoderTiny.from_config(AutoencoderTiny.load_config(here / "taesd")),
    }
listing = {name: [[key, list(t.shape)] for key, t in m.state_dict().items()] for name, m in models.items()}
lines = ["{"]
for i, (name, entries) in enumerate(listing.items()):
    lines.append(f'  "{name}": [')
    lines += [f'    {json.dumps(e)}' + ("," if j < len(entries) - 1 else "") for j, e in enumerate(entries)]
    lines.append("  ]" + ("," if i < len(listing) - 1 else ""))
lines.append("}")
(here / "parameters.json").write_text("\n".join(lines) + "\n")
for name, entries in listing.items():
    total = sum(torch.Size(s).numel() for _, s in entries)
    print(f"{name}: {len(entries)} tensors, {total:,} parameters")
