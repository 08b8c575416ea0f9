#!/usr/bin/env python3
"""LoRA fixtures: LoRA files for the tiny-pano model in the kohya/A1111 and the diffusers/PEFT layouts, and
what diffusers + PEFT compute with them loaded (StableDiffusionPanoramaPipeline, `load_lora_weights`,
`set_adapters`).

    . .venv-ref/bin/activate
    python tools/reference/make_lora_fixtures.py            # writes Tests/Fixtures/{lora,golden/lora}
    python tools/reference/make_lora_fixtures.py --out /tmp/fx

Outputs (relative to --out, default <repo>/Tests/Fixtures):
    lora/kohya-locon.safetensors   kohya names (lora_unet_… / lora_te_…, .lora_down/.lora_up/.alpha), rank 4, alpha 2,
                                   every attention, feed-forward, proj_in/out (1x1 conv), resnet conv1/conv2 (3x3),
                                   time_emb_proj, conv_shortcut, down/up-sampler conv (3x3) and text encoder q/k/v/out,
                                   fc1/fc2 module of tiny-pano
    lora/kohya-te.pt               the text encoder modules of kohya-locon, written by torch.save
    lora/peft-attn.safetensors     diffusers' save_lora_weights of a PEFT adapter (unet.… / text_encoder.…,
                                   lora_A/lora_B), rank 4, lora_alpha 8 in the file's `lora_adapter_metadata`,
                                   on the attention and text encoder attention projections
    golden/lora/<case>.safetensors final_latent [1, 4, 64, 96] (512x768, 6 DDIM steps, guidance 7.5, seed 1234)
                                   and encoder_hidden_states [2, 77, 32] ([negative "", prompt])
    golden/lora/cases.json         the cases: LoRA files and weights (text encoder, UNet)

CPU, fp32, 2 threads, fixed seeds.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from diffusers import StableDiffusionPanoramaPipeline  # noqa: E402
from diffusers.loaders.lora_base import set_adapters_for_text_encoder  # noqa: E402

PROMPT = "snowy mountains at sunset"
HEIGHT, WIDTH, STEPS, GUIDANCE, SEED = 512, 768, 6, 7.5, 1234
RANK, KOHYA_ALPHA, PEFT_ALPHA = 4, 2.0, 8.0

# (case name, [(file, text encoder weight, unet weight)])
CASES = [
    ("kohya_0.7", [("kohya-locon.safetensors", 0.7, 0.7)]),
    ("kohya_1.3", [("kohya-locon.safetensors", 1.3, 1.3)]),
    ("peft_1.0", [("peft-attn.safetensors", 1.0, 1.0)]),
    ("kohya_0.7_peft_1.3", [("kohya-locon.safetensors", 0.7, 0.7), ("peft-attn.safetensors", 1.3, 1.3)]),
    ("kohya_te0.5_unet1.2", [("kohya-locon.safetensors", 0.5, 1.2)]),
]

UNET_SUFFIXES = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                 "conv1", "conv2", "time_emb_proj", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv")
TE_SUFFIXES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def targets(model, suffixes, prefix):
    names = []
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and name.startswith(prefix) \
                and any(name.endswith(s) for s in suffixes):
            names.append(name)
    return names


def kohya_lora(pipe, gen):
    """Random down/up pairs under kohya's names: up [out, r(, 1, 1)], down [r, in(, kh, kw)]."""
    tensors = {}
    for component, model, suffixes, prefix in (("unet", pipe.unet, UNET_SUFFIXES, ""),
                                               ("te", pipe.text_encoder, TE_SUFFIXES, "encoder")):
        for name in targets(model, suffixes, prefix):
            module = model.get_submodule(name)
            w = module.weight
            # kohya names the text encoder's modules from `text_model.`, which transformers 5's CLIPTextModel
            # no longer has as a submodule
            path = name if component == "unet" or name.startswith("text_model.") else "text_model." + name
            key = f"lora_{component}_" + path.replace(".", "_")
            if w.dim() == 4:
                out_c, in_c, kh, kw = w.shape
                down = torch.randn((RANK, in_c, kh, kw), generator=gen) / (in_c * kh * kw) ** 0.5
                up = torch.randn((out_c, RANK, 1, 1), generator=gen)
            else:
                out_c, in_c = w.shape
                down = torch.randn((RANK, in_c), generator=gen) / in_c ** 0.5
                up = torch.randn((out_c, RANK), generator=gen)
            # a delta of about a quarter of the layer's weights: visible, not destructive
            up *= 0.5 * float(w.detach().std()) / RANK ** 0.5
            tensors[key + ".lora_down.weight"] = down.contiguous()
            tensors[key + ".lora_up.weight"] = up.contiguous()
            tensors[key + ".alpha"] = torch.tensor(KOHYA_ALPHA)
    return tensors


def peft_lora(pipe, gen, path):
    """A PEFT adapter on the attention projections, saved the way diffusers saves trained LoRAs."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet_targets = [n for n in targets(pipe.unet, ("to_q", "to_k", "to_v", "to_out.0"), "")]
    te_targets = [n for n in targets(pipe.text_encoder, ("q_proj", "k_proj", "v_proj", "out_proj"), "encoder")]
    unet_cfg = LoraConfig(r=RANK, lora_alpha=PEFT_ALPHA, target_modules=unet_targets, init_lora_weights=False)
    te_cfg = LoraConfig(r=RANK, lora_alpha=PEFT_ALPHA, target_modules=te_targets, init_lora_weights=False)
    pipe.unet.add_adapter(unet_cfg, adapter_name="make")
    pipe.text_encoder.add_adapter(te_cfg, adapter_name="make")
    with torch.no_grad():
        for model in (pipe.unet, pipe.text_encoder):
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * (0.3 / p.shape[-1] ** 0.5))
    unet_sd = get_peft_model_state_dict(pipe.unet, adapter_name="make")
    te_sd = get_peft_model_state_dict(pipe.text_encoder, adapter_name="make")
    folder = path + ".d"
    def metadata(cfg):  # target_modules is a set: sorted, so the file is the same on every run
        d = cfg.to_dict()
        d["target_modules"] = sorted(d["target_modules"])
        return d

    StableDiffusionPanoramaPipeline.save_lora_weights(
        folder, unet_lora_layers=unet_sd, text_encoder_lora_layers=te_sd,
        unet_lora_adapter_metadata=metadata(unet_cfg), text_encoder_lora_adapter_metadata=metadata(te_cfg))
    os.replace(os.path.join(folder, "pytorch_lora_weights.safetensors"), path)
    os.rmdir(folder)
    pipe.unet.delete_adapters("make")
    pipe.text_encoder.delete_adapter("make")


@torch.no_grad()
def run(pipe):
    embeds = pipe.encode_prompt(PROMPT, "cpu", 1, True, "")
    out = pipe(prompt=PROMPT, negative_prompt="", height=HEIGHT, width=WIDTH, num_inference_steps=STEPS,
               guidance_scale=GUIDANCE, generator=torch.Generator("cpu").manual_seed(SEED), output_type="latent")
    return {"final_latent": out.images.float().contiguous(),
            "encoder_hidden_states": torch.cat([embeds[1], embeds[0]]).float().contiguous()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    lora_dir, golden_dir = os.path.join(args.out, "lora"), os.path.join(args.out, "golden", "lora")
    os.makedirs(lora_dir, exist_ok=True)
    os.makedirs(golden_dir, exist_ok=True)

    pipe = StableDiffusionPanoramaPipeline.from_pretrained(
        os.path.join(REPO, "Tests", "Fixtures", "models", "tiny-pano"), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    gen = torch.Generator().manual_seed(2101)
    kohya = kohya_lora(pipe, gen)
    save_file(kohya, os.path.join(lora_dir, "kohya-locon.safetensors"))
    # the same LoRA's text encoder half as torch.save writes it, as older LoRAs come (.pt)
    torch.save({k: v for k, v in kohya.items() if k.startswith("lora_te_")}, os.path.join(lora_dir, "kohya-te.pt"))
    peft_lora(pipe, gen, os.path.join(lora_dir, "peft-attn.safetensors"))

    base = run(pipe)
    scale = float(base["final_latent"].abs().max())
    cases = {}
    for case, loras in CASES:
        names = []
        for i, (file, _, _) in enumerate(loras):
            name = f"a{i}"
            pipe.load_lora_weights(os.path.join(lora_dir, file), adapter_name=name)
            names.append(name)
        pipe.set_adapters(names, adapter_weights=[u for _, _, u in loras])
        set_adapters_for_text_encoder(names, pipe.text_encoder, [t for _, t, _ in loras])
        result = run(pipe)
        save_file(result, os.path.join(golden_dir, f"{case}.safetensors"))
        effect = float((result["final_latent"] - base["final_latent"]).abs().max()) / scale
        print(f"{case}: LoRA moves the final latents by {effect:.3f} of max|base|")
        assert effect > 0.02, "the LoRA changes too little for a parity test to mean anything"
        te_effect = float((result["encoder_hidden_states"] - base["encoder_hidden_states"]).abs().max())
        print(f"{case}: text embeddings move by {te_effect:.4f}")
        assert te_effect > 1e-2, "the text encoder part of the LoRA was not applied"
        cases[case] = [{"file": f, "text_encoder_weight": t, "unet_weight": u} for f, t, u in loras]
        pipe.delete_adapters(names)
    after = run(pipe)
    assert torch.equal(after["final_latent"], base["final_latent"]), "deleting the adapters did not restore the model"
    save_file(base, os.path.join(golden_dir, "none.safetensors"))
    with open(os.path.join(golden_dir, "cases.json"), "w") as f:
        json.dump({"prompt": PROMPT, "negative_prompt": "", "height": HEIGHT, "width": WIDTH, "steps": STEPS,
                   "guidance": GUIDANCE, "seed": SEED, "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
