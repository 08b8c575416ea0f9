#!/usr/bin/env python3
"""Reference ids for panorama's Swift CLIP tokenizer, computed with Hugging Face transformers' CLIPTokenizer.

    . /work/.venv-ref/bin/activate
    python tools/reference/make_tokenizer_fixtures.py        # writes into <repo>/Tests/Fixtures

Writes (relative to Tests/Fixtures):
    clip-vocab/{vocab.json,merges.txt,LICENSE.*}   the real 49408-token CLIP vocabulary (copied from --clip-vocab)
    tokenizer/tiny/{vocab.json,merges.txt}         a 1000-token vocabulary built exactly like make_golden.py's
                                                   write_clip_tokenizer_files(..., n_merges=486)
    tokenizer/folders/<name>/                      diffusers-style `tokenizer/` folders (tiny vocab) with various
                                                   tokenizer_config.json / special_tokens_map.json layouts
    Sources/Tokenization/UnicodeNormalizationData.swift   NFC tables matching tokenizers' (Unicode 9.0) NFC
    tokenizer/expected.json                        for each setting, every prompt's ids (padding="max_length",
                                                   truncation=True, max_length=77) and untruncated length
                                                   (= len(tokenizer(prompt).input_ids), BOS and EOS included)

Offline and deterministic: rerunning with the same transformers/tokenizers versions gives identical files.
"""
import argparse
import glob
import gzip
import json
import os
import shutil
import sys
import unicodedata

import tokenizers
import transformers
from transformers import CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
MAX_LEN = 77

LONG = " ".join(["a very detailed matte painting of a seaside village at dusk, trending on artstation"] * 6)
PROMPTS = [
    "snowy mountains at sunset",
    "a photo of an astronaut riding a horse on mars",
    "A  Sunlit MOUNTAIN-lake panorama, 360° view; isn't it (HDR) 4k!!",
    "",
    " ",
    "     ",
    "  leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nand\rcarriage\x0breturns\x0c",
    "non\u00a0breaking\u2003em\u3000ideographic\u202fspace\u0085nel",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "info\x1cseparators\x1fare not whitespace",
    "!!!???...",
    "a,b;c:d",
    "1234567 3.14 4k 1920x1080 2x 0.5",
    "isn't it's we'll I'M you'RE they've she'd rock 'n' roll ''s",
    "don\u2019t \u2018quoted\u2019 \u201cdouble\u201d",
    "caf\u00e9 na\u00efve \u00c5ngstr\u00f6m",
    "cafe\u0301 nai\u0308ve A\u030angstro\u0308m",
    "\u212b Kelvin\u212a o\u0308\u0304 a\u0323\u0301",
    "Stra\u00dfe STRASSE \u1e9e",
    "\u0130stanbul \u0131\u015f\u0131k",
    "\u039f\u0394\u039f\u03a3 \u03c3\u03bf\u03c6\u03af\u03b1",
    "\u01c5 \u01c4 \ufb01re \u2167 \u216b",
    "\u5bcc\u58eb\u5c71\u306e\u5915\u713c\u3051",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8 \u1100\u1161\u11a8",
    "\u0627\u0644\u0633\u0644\u0627\u0645 \u0639\u0644\u064a\u0643\u0645 \u0663\u0664\u0665",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "\u2460\u2461 \u00bd x\u00b2 \u00b3\u2044\u2084",
    # NFC corner cases: marks reordered after a decomposition, an astral starter before a mark, marks and
    # compositions newer than the Unicode 9.0 data of tokenizers' NFC
    "C\u0361\u0f73 \U000104d8\u0308 \u064a\u0654\u0899 \U00011935\U00011930 \u1100\u1161\u11a8",
    "emoji \U0001f600\U0001f3d4\ufe0f \u2764\ufe0f",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family \U0001f44d\U0001f3fd \U0001f1ef\U0001f1f5\U0001f1eb\U0001f1f7",
    "<|startoftext|>",
    "<|endoftext|>",
    "hello<|endoftext|>world <|startoftext|>again",
    "<|ENDOFTEXT|> <|StartOfText|> <|endoftext",
    "MiXeD CaSe PrOmPt",
    "hyphen-ated under_scored snake_case_name CamelCase",
    "https://example.com/path?q=1&x=y#frag",
    "<div class=\"hero\">Hello &amp; welcome</div>",
    "(masterpiece:1.2), [best quality], {ultra detailed}, ((sharp focus))",
    "a\x00b\x7f c\u0301",
    "x\U00010940\U00010941y unicode17 letters\U000104d8",
    "\ufffd replacement \U000e0001 tag \U0010ffff private",
    "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \uff01",
    "supercalifragilisticexpialidocious" * 8,
    LONG,
]

FOLDERS = {
    # Older diffusers SD 2.x layout: AddedToken dicts (normalized) in tokenizer_config.json, pad "!" only in
    # special_tokens_map.json, which transformers merges over tokenizer_config.json (no added_tokens_decoder).
    "sd2-legacy": {
        "tokenizer_config.json": {
            "add_prefix_space": False,
            "bos_token": {"__type": "AddedToken", "content": "<|startoftext|>", "lstrip": False,
                          "normalized": True, "rstrip": False, "single_word": False},
            "do_lower_case": True,
            "eos_token": {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": False,
                          "normalized": True, "rstrip": False, "single_word": False},
            "errors": "replace",
            "model_max_length": 77,
            "pad_token": "<|endoftext|>",
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": False,
                          "normalized": True, "rstrip": False, "single_word": False},
        },
        "special_tokens_map.json": {
            "bos_token": {"content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False,
                          "single_word": False},
            "eos_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False,
                          "single_word": False},
            "pad_token": "!",
            "unk_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False,
                          "single_word": False},
        },
    },
    # Same layout as SD 1.x folders: pad "<|endoftext|>" in both files.
    "sd1-legacy": {
        "tokenizer_config.json": {
            "bos_token": {"__type": "AddedToken", "content": "<|startoftext|>", "lstrip": False,
                          "normalized": True, "rstrip": False, "single_word": False},
            "eos_token": {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": False,
                          "normalized": True, "rstrip": False, "single_word": False},
            "model_max_length": 77,
            "pad_token": "<|endoftext|>",
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": False,
                          "normalized": True, "rstrip": False, "single_word": False},
        },
        "special_tokens_map.json": {
            "bos_token": {"content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False,
                          "single_word": False},
            "eos_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False,
                          "single_word": False},
            "pad_token": "<|endoftext|>",
            "unk_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False,
                          "single_word": False},
        },
    },
    # transformers >= 4.34 layout: added_tokens_decoder present, so special_tokens_map.json is ignored.
    "added-tokens-decoder": {
        "tokenizer_config.json": {
            "added_tokens_decoder": {
                "0": {"content": "!", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True},
                "998": {"content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False,
                        "single_word": False, "special": True},
                "999": {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": True},
            },
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "model_max_length": 77,
            "pad_token": "!",
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": "<|endoftext|>",
        },
        "special_tokens_map.json": {"pad_token": "<|endoftext|>"},
    },
    # transformers 5 save_pretrained layout: plain strings, pad "!" in tokenizer_config.json, no special map.
    "config-pad-bang": {
        "tokenizer_config.json": {
            "backend": "tokenizers",
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "model_max_length": 77,
            "pad_token": "!",
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": "<|endoftext|>",
        },
    },
    # Only a special_tokens_map.json with an object pad token.
    "special-map-only": {
        "special_tokens_map.json": {"pad_token": {"content": "!", "normalized": False}},
    },
    # Bare vocab.json + merges.txt: CLIPTokenizer defaults.
    "bare": {},
}
FOLDER_PROMPTS = [
    "hi!! there",
    "<|ENDOFTEXT|>x",
    "a<|endoftext|>b<|startoftext|>c",
    "A  <|StartOfText|> B!",
    "snowy mountains at sunset",
    LONG,
]


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


def write_clip_tokenizer_files(bpe_path, out_dir, n_merges):
    """Copied from /work/shared/reference/make_golden.py (which imports torch/diffusers at module level)."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1:1 + n_merges]
    base = list(bytes_to_unicode().values())
    vocab = base + [v + "</w>" for v in base] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(vocab)


def write_normalization_tables(path):
    """Swift tables reproducing the NFC of `tokenizers` (crate unicode-normalization-alignments, whose data is
    Unicode 9.0): canonical combining classes, canonical decompositions and primary composites, each kept only
    where `tokenizers` itself knows it (probed), with values from Python's unicodedata."""
    from tokenizers import normalizers
    nfc, nfd = normalizers.NFC(), normalizers.NFD()
    ccc = {}
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        k = unicodedata.combining(chr(c))
        if k == 0:
            continue
        probe = "a\u0345" + chr(c)  # U+0345 has class 240: a known mark with a lower class moves before it
        if k >= 240 or nfc.normalize_str(probe) != probe:
            ccc[c] = k
    ranges = []
    for c in sorted(ccc):
        if ranges and ranges[-1][1] == c - 1 and ranges[-1][2] == ccc[c]:
            ranges[-1][1] = c
        else:
            ranges.append([c, c, ccc[c]])
    decompositions = []
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        d = unicodedata.decomposition(chr(c))
        if not d or d.startswith("<"):
            continue
        if nfd.normalize_str(chr(c)) != unicodedata.normalize("NFD", chr(c)):
            continue  # unknown to tokenizers
        parts = [int(x, 16) for x in d.split()]
        composes = len(parts) == 2 and nfc.normalize_str(chr(parts[0]) + chr(parts[1])) == chr(c)
        decompositions.append("%X:%s%s" % (c, ",".join("%X" % x for x in parts), "+" if composes else ""))

    def lines(items, per_line):
        return "\n".join(" ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))

    ccc_items = ["%X%s:%d" % (a, "" if a == b else "-%X" % b, k) for a, b, k in ranges]
    with open(path, "w", encoding="utf-8") as f:
        f.write("// Generated by tools/reference/make_tokenizer_fixtures.py from Python %s's unicodedata, restricted to\n"
                "// what tokenizers %s's NFC knows (Unicode 9.0). Do not edit.\n\n"
                "/// Canonical combining classes: `first[-last]:class`, hexadecimal code points.\n"
                "let canonicalCombiningClassData = \"\"\"\n%s\n\"\"\"\n\n"
                "/// Canonical decompositions `code:first[,second][+]`; `+` marks a primary composite (composed by NFC).\n"
                "/// Hangul syllables are algorithmic and not listed.\n"
                "let canonicalDecompositionData = \"\"\"\n%s\n\"\"\"\n"
                % (sys.version.split()[0], tokenizers.__version__, lines(ccc_items, 10), lines(decompositions, 8)))
    return len(ranges), len(decompositions)


def cases(tok, prompts):
    out = []
    for p in prompts:
        ids = tok(p, padding="max_length", truncation=True, max_length=MAX_LEN)["input_ids"]
        full = tok(p)["input_ids"]
        assert len(ids) == MAX_LEN
        out.append({"prompt": p, "ids": list(ids), "length": len(full)})
    return out


def dumps(obj):
    """json.dumps with one case per line and id arrays kept on one line (small, diffable)."""
    def enc(o, indent):
        pad = "  " * indent
        if isinstance(o, dict):
            if "ids" in o:
                return json.dumps(o, ensure_ascii=True)
            items = [f'{pad}  {json.dumps(k)}: {enc(v, indent + 1)}' for k, v in o.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(o, list) and o and isinstance(o[0], dict):
            return "[\n" + ",\n".join(pad + "  " + enc(v, indent + 1) for v in o) + "\n" + pad + "]"
        return json.dumps(o, ensure_ascii=True)
    return enc(obj, 0) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip-vocab", default="/work/shared/data/clip-vocab")
    ap.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures"))
    ap.add_argument("--unicode-tables", default=os.path.join(REPO, "Sources", "Tokenization",
                                                             "UnicodeNormalizationData.swift"))
    args = ap.parse_args()

    clip_dir = os.path.join(args.out, "clip-vocab")
    tok_dir = os.path.join(args.out, "tokenizer")
    tiny_dir = os.path.join(tok_dir, "tiny")
    os.makedirs(clip_dir, exist_ok=True)
    for name in ["vocab.json", "merges.txt"] + [os.path.basename(p) for p in
                                                glob.glob(os.path.join(args.clip_vocab, "LICENSE.*"))]:
        shutil.copyfile(os.path.join(args.clip_vocab, name), os.path.join(clip_dir, name))
    n = write_clip_tokenizer_files(os.path.join(args.clip_vocab, "bpe_simple_vocab_16e6.txt.gz"), tiny_dir, 486)
    assert n == 1000

    def load(d, **kw):
        return CLIPTokenizer(vocab=os.path.join(d, "vocab.json"), merges=os.path.join(d, "merges.txt"),
                             model_max_length=MAX_LEN, **kw)

    settings = []
    for name, d, pad in [("clip", clip_dir, "<|endoftext|>"), ("clip", clip_dir, "!"),
                         ("tiny", tiny_dir, "<|endoftext|>")]:
        tok = load(d, pad_token=pad)
        settings.append({"vocab": os.path.relpath(d, args.out), "pad_token": pad, "pad_token_id": tok.pad_token_id,
                         "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                         "cases": cases(tok, PROMPTS)})

    folders = []
    for name, files in FOLDERS.items():
        d = os.path.join(tok_dir, "folders", name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for f in ["vocab.json", "merges.txt"]:
            shutil.copyfile(os.path.join(tiny_dir, f), os.path.join(d, f))
        for fname, content in files.items():
            with open(os.path.join(d, fname), "w", encoding="utf-8") as f:
                json.dump(content, f, indent=2)
                f.write("\n")
        tok = CLIPTokenizer.from_pretrained(d)
        assert tok.model_max_length == MAX_LEN or name in ("bare", "special-map-only")
        folders.append({"path": os.path.relpath(d, args.out), "pad_token": str(tok.pad_token),
                        "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
                        "eos_token_id": tok.eos_token_id, "cases": cases(tok, FOLDER_PROMPTS)})

    tables = write_normalization_tables(args.unicode_tables)
    print("wrote", args.unicode_tables, "(%d combining-class ranges, %d decompositions)" % tables)

    expected = {"generator": "tools/reference/make_tokenizer_fixtures.py",
                "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                "max_length": MAX_LEN, "settings": settings, "folders": folders}
    with open(os.path.join(tok_dir, "expected.json"), "w", encoding="utf-8") as f:
        f.write(dumps(expected))
    print("wrote", os.path.join(tok_dir, "expected.json"),
          sum(len(s["cases"]) for s in settings), "setting cases,", sum(len(s["cases"]) for s in folders), "folder cases")


if __name__ == "__main__":
    main()
