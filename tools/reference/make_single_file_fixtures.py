#!/usr/bin/env python3
"""Single-file (original LDM layout) checkpoints of the tiny test models, for panorama's loader tests.

AUTOMATIC1111 and ComfyUI users keep Stable Diffusion as one `.safetensors` file in the layout of the
original CompVis/Stability code (`model.diffusion_model.input_blocks.…`, `first_stage_model.…`,
`cond_stage_model.transformer.…` for SD 1.x's CLIP, `cond_stage_model.model.…` for SD 2.x's OpenCLIP).
This script writes such files from the tiny diffusers folders in Tests/Fixtures/models, with the
renaming written here (diffusers → LDM), and proves the renaming right by loading each file back with
diffusers' own converter, `StableDiffusionPipeline.from_single_file(file, config=folder)`, and comparing
every weight with the folder's.

    . .venv-ref/bin/activate
    python tools/reference/make_single_file_fixtures.py      # writes Tests/Fixtures/models/single-file/

Outputs: `tiny-pano-vae.safetensors` (tiny-pano's VAE alone in the original names, no prefix, as
separately downloaded SD VAEs come); `sd15-ldm-shapes.json` and `sd21-ldm-shapes.json` (every tensor name and shape of a full-size
SD 1.5 / SD 2.1 single file, no weights, checked against diffusers' converters on the meta device);
`tiny-sd1.safetensors` (F16: the folder's F32 weights rounded, to keep the fixture small) and
`tiny-sd2.safetensors` (the folder's F16/BF16 weights unchanged, OpenCLIP layout with a fused
`in_proj` and a `text_projection`). VAE attention weights are stored as 1x1 convolutions, as in the
original checkpoints. Deterministic: no random numbers except the seeded text projection.
"""
import argparse
import os

import torch
from safetensors.torch import load_file, save_file

from diffusers import StableDiffusionPipeline

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
MODELS = os.path.join(REPO, "Tests", "Fixtures", "models")

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
          ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def load_component(folder, name):
    d = os.path.join(folder, name)
    tensors = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(d, f)))
    return tensors


def read_config(folder, name):
    import json
    d = os.path.join(folder, name)
    with open(os.path.join(d, "config.json")) as f:
        return json.load(f)


def unet_to_ldm(state, config):
    per = config["layers_per_block"] + 1
    has_attention = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        head = parts[0]
        if head in ("time_embedding", "conv_in", "conv_norm_out", "conv_out"):
            local = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
                     "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
            stem = ".".join(parts[:-1])
            new = local[stem] + "." + parts[-1]
        elif head == "down_blocks":
            b, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
            if kind == "resnets":
                new = f"input_blocks.{1 + b * per + j}.0." + resnet_rest(rest)
            elif kind == "attentions":
                new = f"input_blocks.{1 + b * per + j}.1." + ".".join(rest)
            else:  # downsamplers.0.conv.*
                new = f"input_blocks.{1 + b * per + per - 1}.0.op." + ".".join(rest[1:])
        elif head == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), parts[3:]
            if kind == "resnets":
                new = f"middle_block.{2 * j}." + resnet_rest(rest)
            else:
                new = "middle_block.1." + ".".join(rest)
        elif head == "up_blocks":
            b, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
            if kind == "resnets":
                new = f"output_blocks.{b * per + j}.0." + resnet_rest(rest)
            elif kind == "attentions":
                new = f"output_blocks.{b * per + j}.1." + ".".join(rest)
            else:  # upsamplers.0.conv.*
                slot = 2 if has_attention[b] else 1
                new = f"output_blocks.{b * per + per - 1}.{slot}.conv." + ".".join(rest[1:])
        else:
            raise SystemExit(f"unexpected UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def resnet_rest(rest):
    name = ".".join(rest)
    for diffusers, ldm in RESNET:
        if name.startswith(diffusers + "."):
            return ldm + name[len(diffusers):]
    raise SystemExit(f"unexpected resnet key {name}")


def vae_to_ldm(state, config):
    n = len(config["up_block_types"])
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] in ("quant_conv", "post_quant_conv"):
            new = key
        else:
            side, rest = parts[0], parts[1:]
            if rest[0] == "conv_norm_out":
                new = f"{side}.norm_out.{rest[1]}"
            elif rest[0] in ("conv_in", "conv_out"):
                new = key
            elif rest[0] == "down_blocks":
                i = int(rest[1])
                if rest[2] == "resnets":
                    new = f"{side}.down.{i}.block.{rest[3]}." + ".".join(rest[4:]).replace("conv_shortcut", "nin_shortcut")
                else:
                    new = f"{side}.down.{i}.downsample.conv.{rest[-1]}"
            elif rest[0] == "up_blocks":
                i = n - 1 - int(rest[1])
                if rest[2] == "resnets":
                    new = f"{side}.up.{i}.block.{rest[3]}." + ".".join(rest[4:]).replace("conv_shortcut", "nin_shortcut")
                else:
                    new = f"{side}.up.{i}.upsample.conv.{rest[-1]}"
            elif rest[0] == "mid_block" and rest[1] == "resnets":
                new = f"{side}.mid.block_{int(rest[2]) + 1}." + ".".join(rest[3:]).replace("conv_shortcut", "nin_shortcut")
            elif rest[0] == "mid_block" and rest[1] == "attentions":
                layer = ".".join(rest[3:-1])
                ldm = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}[layer]
                new = f"{side}.mid.attn_1.{ldm}.{rest[-1]}"
                if value.dim() == 2:
                    value = value[:, :, None, None]  # the original stores these projections as 1x1 convolutions
            else:
                raise SystemExit(f"unexpected VAE key {key}")
        out["first_stage_model." + new] = value
    return out


def clip_to_ldm(state):
    out = {}
    for key, value in state.items():
        name = key if key.startswith("text_model.") else "text_model." + key
        out["cond_stage_model.transformer." + name] = value
    return out


def open_clip_to_ldm(state, config):
    state = {(k[len("text_model."):] if k.startswith("text_model.") else k): v for k, v in state.items()}
    p = "cond_stage_model.model."
    out = {
        p + "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        p + "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        p + "ln_final.weight": state.pop("final_layer_norm.weight"),
        p + "ln_final.bias": state.pop("final_layer_norm.bias"),
    }
    state.pop("embeddings.position_ids", None)
    hidden = config["hidden_size"]
    for i in range(config["num_hidden_layers"]):
        s, r = f"encoder.layers.{i}.", f"{p}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[r + f"attn.in_proj_{kind}"] = torch.cat([state.pop(s + f"self_attn.{x}_proj.{kind}") for x in "qkv"])
            out[r + f"attn.out_proj.{kind}"] = state.pop(s + f"self_attn.out_proj.{kind}")
            out[r + f"ln_1.{kind}"] = state.pop(s + f"layer_norm1.{kind}")
            out[r + f"ln_2.{kind}"] = state.pop(s + f"layer_norm2.{kind}")
            out[r + f"mlp.c_fc.{kind}"] = state.pop(s + f"mlp.fc1.{kind}")
            out[r + f"mlp.c_proj.{kind}"] = state.pop(s + f"mlp.fc2.{kind}")
    if state:
        raise SystemExit(f"text encoder keys left unmapped: {sorted(state)}")
    dtype = out[p + "token_embedding.weight"].dtype
    out[p + "text_projection"] = torch.randn(hidden, hidden, generator=torch.Generator().manual_seed(7)).to(dtype)
    return out


def write(name, open_clip, dtype, out_dir):
    folder = os.path.join(MODELS, name)
    unet = unet_to_ldm(load_component(folder, "unet"), read_config(folder, "unet"))
    vae = vae_to_ldm(load_component(folder, "vae"), read_config(folder, "vae"))
    text = load_component(folder, "text_encoder")
    text = open_clip_to_ldm(text, read_config(folder, "text_encoder")) if open_clip else clip_to_ldm(text)
    checkpoint = {**unet, **vae, **text}
    if dtype is not None:
        checkpoint = {k: v.to(dtype) for k, v in checkpoint.items()}
    checkpoint = {k: v.contiguous() for k, v in checkpoint.items()}
    path = os.path.join(out_dir, f"{name}.safetensors")
    save_file(checkpoint, path, metadata={"format": "pt"})

    # diffusers' own converter must give back the folder's weights (rounded as stored).
    ours = StableDiffusionPipeline.from_single_file(path, config=folder, local_files_only=True,
                                                    safety_checker=None, requires_safety_checker=False)
    for component in ("unet", "vae", "text_encoder"):
        a = getattr(ours, component).state_dict()
        b = load_component(folder, component)
        if component == "text_encoder":  # transformers 5 names them without "text_model."; older saves with it
            a = {k.removeprefix("text_model."): v for k, v in a.items()}
            b = {k.removeprefix("text_model."): v for k, v in b.items()}
        a = {k: v for k, v in a.items() if not k.endswith("position_ids")}
        b = {k: v for k, v in b.items() if not k.endswith("position_ids")}
        if set(a) != set(b):
            raise SystemExit(f"{name}/{component}: key sets differ: {sorted(set(a) ^ set(b))[:8]}")
        for k in b:
            expected = b[k].to(dtype).float() if dtype is not None else b[k].float()
            if not torch.equal(a[k].float(), expected):
                raise SystemExit(f"{name}/{component}: {k} differs after diffusers' conversion")
    print(f"{path}: {len(checkpoint)} tensors, {os.path.getsize(path)} bytes; diffusers' from_single_file "
          f"gives back every weight of {name}")


SD21 = {  # stabilityai/stable-diffusion-2-1's published configs (the keys that differ from SD 1.5's)
    "unet": dict(attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024, use_linear_projection=True,
                 upcast_attention=True, sample_size=96),
    "text_encoder": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
                         hidden_act="gelu", projection_dim=512),
}


def write_shape_listings(out_dir):
    """Names and shapes (no weights) of full-size SD 1.5 and SD 2.1 checkpoints in the original layout,
    built on the meta device and checked against diffusers' converters."""
    import json
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
                                                     convert_open_clip_checkpoint)
    from transformers import CLIPTextConfig, CLIPTextModel

    sd15 = os.path.join(REPO, "benchmarks", "sd15")
    for name in ("sd15", "sd21"):
        unet_config = UNet2DConditionModel.load_config(os.path.join(sd15, "unet"))
        text_config = CLIPTextConfig.from_pretrained(os.path.join(sd15, "text_encoder"))
        if name == "sd21":
            unet_config = {**unet_config, **SD21["unet"]}
            text_config = CLIPTextConfig(**{**text_config.to_dict(), **SD21["text_encoder"]})
        vae_config = AutoencoderKL.load_config(os.path.join(sd15, "vae"))
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(unet_config)
            vae = AutoencoderKL.from_config(vae_config)
            text = CLIPTextModel(text_config)
        checkpoint = {**unet_to_ldm(unet.state_dict(), unet_config), **vae_to_ldm(vae.state_dict(), vae_config)}
        text_state = {k: v for k, v in text.state_dict().items() if not k.endswith("position_ids")}
        if name == "sd15":
            checkpoint.update(clip_to_ldm(text_state))
        else:
            ldm = open_clip_to_ldm(text_state, text_config.to_dict())
            # OpenCLIP ViT-H has a 24th layer that SD 2.x does not use; real files store it.
            for k, v in list(ldm.items()):
                if ".resblocks.22." in k:
                    ldm[k.replace(".resblocks.22.", ".resblocks.23.")] = v
            ldm["cond_stage_model.model.text_projection"] = torch.empty(1024, 1024, device="meta")
            checkpoint.update(ldm)

        # diffusers' converters must turn the listing back into the models' own names and shapes.
        def same(converted, model, what):
            expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("position_ids")}
            got = {k.removeprefix("text_model."): tuple(v.shape) for k, v in converted.items()}
            expected = {k.removeprefix("text_model."): v for k, v in expected.items()}
            if got != expected:
                raise SystemExit(f"{name}/{what}: diffusers' conversion differs: {sorted(set(got) ^ set(expected))[:6]}")
        same(convert_ldm_unet_checkpoint(checkpoint, unet_config), unet, "unet")
        same(convert_ldm_vae_checkpoint(checkpoint, vae_config), vae, "vae")
        if name == "sd21":
            same(convert_open_clip_checkpoint(text, checkpoint), text, "text_encoder")

        listing = sorted((k, list(v.shape)) for k, v in checkpoint.items())
        path = os.path.join(out_dir, f"{name}-ldm-shapes.json")
        with open(path, "w") as f:
            f.write("[\n" + ",\n".join(json.dumps(e) for e in listing) + "\n]\n")
        print(f"{path}: {len(listing)} tensors; diffusers' converters give back the {name} models' names and shapes")


def write_standalone_vae(out_dir):
    """tiny-pano's VAE alone, in the original names without the checkpoint prefix (the layout of the
    fine-tuned SD VAEs people download separately), checked with diffusers' AutoencoderKL.from_single_file."""
    from diffusers import AutoencoderKL
    folder = os.path.join(MODELS, "tiny-pano")
    config = read_config(folder, "vae")
    state = load_component(folder, "vae")
    ldm = {k.removeprefix("first_stage_model."): v.contiguous() for k, v in vae_to_ldm(state, config).items()}
    path = os.path.join(out_dir, "tiny-pano-vae.safetensors")
    save_file(ldm, path, metadata={"format": "pt"})
    loaded = AutoencoderKL.from_single_file(path, config=folder, subfolder="vae", local_files_only=True).state_dict()
    if set(loaded) != set(state) or any(not torch.equal(loaded[k], state[k]) for k in state):
        raise SystemExit("tiny-pano-vae: diffusers' conversion does not give back the folder's VAE")
    print(f"{path}: {len(ldm)} tensors, {os.path.getsize(path)} bytes; diffusers' from_single_file gives back "
          "every weight of tiny-pano's VAE")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(MODELS, "single-file"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    write("tiny-sd1", open_clip=False, dtype=torch.float16, out_dir=args.out)
    write("tiny-sd2", open_clip=True, dtype=None, out_dir=args.out)
    write_shape_listings(args.out)
    write_standalone_vae(args.out)


if __name__ == "__main__":
    main()
