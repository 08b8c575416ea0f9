#!/usr/bin/env python3
"""PyTorch `torch.save` fixtures for panorama's safe pickle loader (Tests/Fixtures/pickle/).

Every file is written by torch itself (its zip format, pickle protocol 2 unless said), and each
tensor file has a safetensors twin with the same tensors under the flattened names the Swift
reader gives them, so the tests can prove both load identically. Hostile files are written here
too: pickles whose `__reduce__` calls os.system / subprocess / eval / exec to create a marker file
(the Swift tests check the marker never appears; do not torch.load these with weights_only=False).

    . .venv-ref/bin/activate
    python tools/reference/make_pickle_fixtures.py      # writes Tests/Fixtures/pickle/

Outputs:
- `tensors.pt` (+ `tensors-p4.pt`, `tensors-p5.pt` with pickle protocols 4 and 5, and `tensors-zip64.pt`,
  the same entries rewritten as a ZIP64 archive) and their twin `tensors.safetensors`: every dtype the
  reader supports, a storage offset, two tensors sharing one storage, a transposed (non-contiguous)
  tensor, an expanded (stride 0) one, a 0-d and an empty tensor, a Parameter, nested dicts and an
  OrderedDict, and scalar leaves (metadata).
- `module-state-dict.pt` and its twin `module-state-dict.safetensors`: an nn.Module's state_dict().
- `embedding.pt` (A1111 textual inversion: string_to_param dict) and `embedding-paramdict.pt` (the
  original textual-inversion code's ParameterDict); `legacy.pt` (pre-1.6 format); `compressed.pt`
  (tensors.pt re-zipped with deflate).
- `tiny-sd1.ckpt`: Tests/Fixtures/models/single-file/tiny-sd1.safetensors as a PyTorch Lightning style
  checkpoint ({'state_dict': ..., 'global_step': 1, 'callbacks': {ModelCheckpoint: {...}}}, the
  callback class under the name PyTorch Lightning gives it, without needing Lightning installed).
- `tiny-pano-vae.pt`: tiny-pano-vae.safetensors as {'state_dict': ...}, as SD VAE .pt files come.
- `tiny-sd2-bin/{unet,vae}/diffusion_pytorch_model.bin`, `tiny-sd2-bin/text_encoder/pytorch_model.bin`:
  the tiny-sd2 folder's weights (dtypes unchanged) as diffusers/transformers wrote .bin files.
- `evil-*.pt`: os.system, subprocess.Popen, builtins.eval, builtins.exec (protocol 4, STACK_GLOBAL),
  and os.system hidden after a real tensor, each creating /tmp/panorama-pickle-pwned-<name>.
"""
import collections
import io
import os
import shutil
import struct
import subprocess
import sys
import types
import zipfile

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(REPO, "Tests", "Fixtures", "pickle")
MODELS = os.path.join(REPO, "Tests", "Fixtures", "models")

torch.set_num_threads(2)


def tensors_object():
    """The saved object and the flat {name: contiguous tensor} the reader must give for it."""
    g = torch.Generator().manual_seed(21)
    f32 = torch.randn(3, 4, generator=g)
    base = torch.randn(10, generator=g)
    shared = torch.randn(12, generator=g)
    matrix = torch.randn(3, 5, generator=g)
    obj = {
        "dtypes": {
            "f32": f32,
            "f16": torch.randn(2, 3, generator=g).half(),
            "bf16": torch.randn(2, 3, generator=g).bfloat16(),
            "f64": torch.randn(5, generator=g).double(),
            "i64": torch.tensor([-(2 ** 40), -1, 0, 7], dtype=torch.int64),
            "i32": torch.tensor([[-5, 6], [2 ** 30, -(2 ** 31)]], dtype=torch.int32),
            "i16": torch.tensor([-300, 300], dtype=torch.int16),
            "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
            "u8": torch.tensor([0, 1, 255], dtype=torch.uint8),
            "bool": torch.tensor([True, False, True]),
        },
        "offset": base[3:8],                       # storage offset 3 into a 10-element storage
        "shared_whole": shared.view(3, 4),          # two tensors on one storage
        "shared_part": shared[4:10].view(2, 3),
        "transposed": matrix.t(),                   # non-contiguous: stride (1, 5)
        "expanded": torch.arange(3.0).view(3, 1).expand(3, 4),  # stride (1, 0)
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "parameter": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
        "nested": collections.OrderedDict([("inner", {"deep": torch.randn(2, generator=g)}), ("list", [torch.ones(2), 3])]),
        "global_step": 1,
        "name": "fixture",
        "lr": 0.5,
        "flag": True,
    }
    flat = {}

    def walk(prefix, value):
        if isinstance(value, torch.Tensor):
            flat[prefix] = value.detach().contiguous().clone()
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)

    walk("", obj)
    return obj, flat


def rezip(src, dst, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))


def write_zip64(src, dst):
    """The entries of `src` as stored entries of a ZIP64 archive: every size and offset in the central
    directory is 0xFFFFFFFF with the real value in the ZIP64 extra field, and the end record points at
    a ZIP64 end record, as writers do for archives over 4 GB."""
    with zipfile.ZipFile(src) as zin:
        items = [(i.filename, zin.read(i.filename)) for i in zin.infolist()]
    out = bytearray()
    central = bytearray()
    for name, data in items:
        nb = name.encode()
        crc = zipfile.crc32(data) & 0xFFFFFFFF
        offset = len(out)
        local_extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(nb), len(local_extra))
        out += nb + local_extra + data
        extra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                               len(nb), len(extra), 0, 0, 0, 0, 0xFFFFFFFF)
        central += nb + extra
    cd_offset = len(out)
    out += central
    z64_offset = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(items), len(items), len(central), cd_offset)
    out += struct.pack("<IIQI", 0x07064B50, 0, z64_offset, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(dst, "wb") as f:
        f.write(out)


class Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def evil_files():
    marker = "/tmp/panorama-pickle-pwned-"
    cases = {
        "os-system": (os.system, f"touch {marker}os-system", 2),
        "subprocess": (subprocess.Popen, ["touch", f"{marker}subprocess"], 2),
        "eval": (eval, f"open('{marker}eval', 'w').close()", 2),
        "exec": (exec, f"open('{marker}exec', 'w').close()", 4),
    }
    for name, (func, arg, protocol) in cases.items():
        torch.save({"weight": Evil(func, arg)}, os.path.join(OUT, f"evil-{name}.pt"), pickle_protocol=protocol)
    # The payload after a legitimate tensor: nothing may be half-loaded.
    torch.save({"a": torch.ones(2), "z": Evil(os.system, f"touch {marker}after-tensor")},
               os.path.join(OUT, "evil-after-tensor.pt"))


def lightning_checkpoint_class():
    """A stand-in for pytorch_lightning's ModelCheckpoint, pickled under Lightning's module name."""
    name = "pytorch_lightning.callbacks.model_checkpoint"
    module = types.ModuleType(name)

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__ = name
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    for part in ["pytorch_lightning", "pytorch_lightning.callbacks", name]:
        sys.modules.setdefault(part, types.ModuleType(part))
    sys.modules[name] = module
    return ModelCheckpoint


def module_state_dict():
    """A real module's state_dict(): an OrderedDict carrying a `_metadata` attribute, which pickle
    restores with BUILD on the dict (as in every diffusers/transformers .bin)."""
    torch.manual_seed(3)
    module = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.GroupNorm(1, 3))
    torch.save(module.state_dict(), os.path.join(OUT, "module-state-dict.pt"))
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, os.path.join(OUT, "module-state-dict.safetensors"))


def main():
    os.makedirs(OUT, exist_ok=True)
    module_state_dict()
    obj, flat = tensors_object()
    path = os.path.join(OUT, "tensors.pt")
    torch.save(obj, path)
    torch.save(obj, os.path.join(OUT, "tensors-p4.pt"), pickle_protocol=4)
    torch.save(obj, os.path.join(OUT, "tensors-p5.pt"), pickle_protocol=5)
    save_file(flat, os.path.join(OUT, "tensors.safetensors"))
    write_zip64(path, os.path.join(OUT, "tensors-zip64.pt"))
    rezip(path, os.path.join(OUT, "compressed.pt"), zipfile.ZIP_DEFLATED)
    # Both re-written archives must still be what torch reads as the same object.
    for name in ["tensors-zip64.pt", "compressed.pt", "tensors-p4.pt", "tensors-p5.pt"]:
        back = torch.load(os.path.join(OUT, name), weights_only=False)  # our own files; weights_only has no FRAME
        assert torch.equal(back["transposed"], obj["transposed"]) and torch.equal(back["dtypes"]["bf16"], obj["dtypes"]["bf16"]), name
    torch.save({"a": torch.ones(3)}, os.path.join(OUT, "legacy.pt"), _use_new_zipfile_serialization=False)

    g = torch.Generator().manual_seed(5)
    vectors = torch.randn(2, 32, generator=g)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "tiny-emb", "step": 10,
                "sd_checkpoint": "abc", "sd_checkpoint_name": "tiny"}, os.path.join(OUT, "embedding.pt"))
    torch.save({"string_to_token": {"*": 265},
                "string_to_param": torch.nn.ParameterDict({"*": torch.nn.Parameter(vectors.clone())})},
               os.path.join(OUT, "embedding-paramdict.pt"))

    sd1 = load_file(os.path.join(MODELS, "single-file", "tiny-sd1.safetensors"))
    callback = lightning_checkpoint_class()
    torch.save({"epoch": 0, "global_step": 1, "pytorch-lightning_version": "1.4.2",
                "callbacks": {callback: {"best_model_score": torch.tensor(0.5), "dirpath": "/logs"}},
                "state_dict": sd1}, os.path.join(OUT, "tiny-sd1.ckpt"))
    vae = load_file(os.path.join(MODELS, "single-file", "tiny-pano-vae.safetensors"))
    torch.save({"state_dict": vae}, os.path.join(OUT, "tiny-pano-vae.pt"))

    bin_root = os.path.join(OUT, "tiny-sd2-bin")
    shutil.rmtree(bin_root, ignore_errors=True)
    for component, src, dst in [("unet", "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.bin"),
                                ("vae", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
                                ("text_encoder", "model.fp16.safetensors", "pytorch_model.bin")]:
        os.makedirs(os.path.join(bin_root, component))
        weights = load_file(os.path.join(MODELS, "tiny-sd2", component, src))
        torch.save(weights, os.path.join(bin_root, component, dst))

    evil_files()
    for name in sorted(os.listdir(OUT)):
        print(name)


if __name__ == "__main__":
    main()
