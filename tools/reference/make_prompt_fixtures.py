#!/usr/bin/env python3
"""A1111 prompt-syntax fixtures for panorama's Swift tests (emphasis runs, chunks, ids, weights), from the
reference in a1111_prompt.py with transformers' CLIPTokenizer on the tiny fixture vocabularies.

    /work/.venv-ref/bin/python tools/reference/make_prompt_fixtures.py   # writes Tests/Fixtures/golden/prompts/chunks.json

Weights are stored as Python float.hex() strings (chunk weights run-length: [[hex, count], ...]) so the Swift test can compare them bit for bit.
Deterministic: no randomness; reruns give identical files.
"""
import json
import os
import sys

import torch
from transformers import CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import a1111_prompt as ap  # noqa: E402

FIX = os.path.join(REPO, "Tests", "Fixtures")
TOKENIZERS = {"sd1": "models/tiny-pano/tokenizer", "sd2": "models/tiny-sd2/tokenizer"}
# Names only matter by their tokens and vector counts here; "tinyemb" and "tinyembxl" share first tokens.
EMBEDDINGS = {"tinyemb": 3, "tinyembxl": 2, "neg": 1, "wide": 8}


def words(n, comma_at=(), word="a"):
    """n one-token words; a comma token after the words at the given 0-based token positions."""
    out = []
    for i in range(n):
        out.append(word + ("," if i in comma_at else ""))
    return " ".join(out)


PROMPTS = [
    # A1111's doctest examples and their neighbours
    "normal text", "an (important) word", "(unbalanced", "[unbalanced", "\\(literal\\]", "(unnecessary)(parens)",
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "", " ", "(", ")", "[", "]", ":", "\\", "\\x", "a\\\\b", "a)) b]] c", "((a)", "[[a]", "(a [b (c:1.2)] d)",
    "(a:1.3", "a:1.3) b", "(a: 1.3 ) b", "(a:+1.25) (b:-0.5) (c:.5) (d:1.) (e:0)", "(:1.1)", "(a:1e3)",
    "(a:\u0661.\u0665) b", "(snow:1.2), [[fog]], (sun:0.8) (((glow)))", "\\(\\(a\\)\\) \\[b\\] \\\\",
    "masterpiece, (best quality:1.2), [[blurry]], (ultra (detailed:1.1):0.9)",
    # BREAK
    "a BREAK b", "BREAK a", "a BREAK", "BREAK", "a BREAK BREAK b", "aBREAK b", "a BREAKb", "a\nBREAK\nb",
    "a break b", "a BREAK, b", "(a BREAK b)", "[a BREAK b] c", "a, BREAK (b:1.2) BREAK [c]", "a_BREAK b",
    # long prompts: 75, 76, 150, 300 tokens; commas at and around the backtrack window
    words(75), words(76), words(76, comma_at=(59,)), words(76, comma_at=(54,)), words(76, comma_at=(55,)),
    words(76, comma_at=(53,)), words(80, comma_at=(74,)), words(76, comma_at=(10, 60, 70)),
    words(75) + ", b", words(150), words(150, comma_at=range(6, 150, 7)), words(300),
    words(300, comma_at=range(3, 300, 11)), "(" + words(100, comma_at=(40, 70)) + ":1.3) " + words(60),
    "[" + words(70) + "] (" + words(20, comma_at=(2,)) + ")", words(40) + " BREAK " + words(120, comma_at=(50,)),
    # embeddings (SD1 and SD2 tokenizers alike)
    "tinyemb", "a tinyemb b", "(tinyemb:1.3), [neg] x", "tinyembxl and tinyemb", "tinyembx tinyem",
    words(73) + " tinyemb", words(72) + " tinyemb", words(70, comma_at=(60,)) + " wide b",
    words(68, comma_at=(66,)) + " a tinyemb c d e f g", "neg BREAK neg neg", "TinyEmb, NEG",
    "(" + words(74) + " tinyemb tinyemb:0.7)",
]


def runs_of(weights):
    """Run-length weights: [[float.hex(), count], ...]."""
    out = []
    for w in weights:
        h = float(w).hex()
        if out and out[-1][0] == h:
            out[-1][1] += 1
        else:
            out.append([h, 1])
    return out


def main():
    torch.set_num_threads(2)
    embs = {k: torch.zeros(n, 1) for k, n in EMBEDDINGS.items()}
    cases = []
    for key, path in TOKENIZERS.items():
        tok = CLIPTokenizer.from_pretrained(os.path.join(FIX, path))
        for prompt in PROMPTS:
            chunks = ap.chunk(tok, prompt, embs)
            for c in chunks:
                assert len(c["ids"]) == 77 and len(c["weights"]) == 77
            cases.append(dict(
                tokenizer=key, prompt=prompt,
                runs=[[t, float(w).hex()] for t, w in ap.parse(prompt)],
                chunks=[dict(ids=c["ids"], weights=runs_of(c["weights"]),
                             embeddings=[list(e) for e in c["embeddings"]]) for c in chunks]))
    out = dict(tokenizers=TOKENIZERS, embeddings=EMBEDDINGS, cases=cases,
               note="tools/reference/make_prompt_fixtures.py: a1111_prompt.parse / chunk; weights are float.hex()")
    os.makedirs(os.path.join(FIX, "golden", "prompts"), exist_ok=True)
    with open(os.path.join(FIX, "golden", "prompts", "chunks.json"), "w") as f:
        # One case per line: compact, and a changed case shows as one changed line.
        head = json.dumps({k: v for k, v in out.items() if k != "cases"}, ensure_ascii=False)[:-1]
        f.write(head + ', "cases": [\n')
        f.write(",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cases))
        f.write("\n]}\n")
    n_chunks = sum(len(c["chunks"]) for c in cases)
    print(f"{len(cases)} cases, {n_chunks} chunks")


if __name__ == "__main__":
    main()
