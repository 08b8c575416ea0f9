#!/usr/bin/env python3
"""A reference of AUTOMATIC1111's prompt handling, written for panorama's tests from A1111's documented
behaviour (modules/prompt_parser.py parse_prompt_attention, modules/sd_hijack_clip.py tokenize_line /
process_tokens, modules/sd_emphasis.py "Original", textual_inversion's find_embedding_at_position, the
"pad prompt/negative prompt to be same length" option). Not A1111's code; no diffusers long-prompt logic.

    parse(text)                      -> [[text, weight], ...]    emphasis runs, BREAK as ["BREAK", -1]
    chunk(tokenizer, text, embs)     -> [Chunk]                  ids (77), weights (77), embedding placements
    encode(text_encoder, tokenizer, text, embs, clip_skip) -> torch [1, 77 * chunks, d]
    pad_to(z, chunks, empty)         -> z with empty-prompt chunks appended

`embs` maps a name (file stem) to a float32 tensor [n, d] of its vectors. One deliberate difference from
A1111: when the comma backtrack moves tokens to the next chunk, an embedding among them moves with its
vectors (A1111 leaves the vector fix-up behind in the previous chunk, so the moved slots would read token 0).
"""
import re

import torch

CHUNK = 75
COMMA_BACKTRACK = 20

_ATTENTION = re.compile(r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|
\(|\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|]|
[^\\()\[\]:]+|
:
""", re.X)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse(text):
    """Emphasis runs [[text, weight]] with A1111's rules (see panorama's PromptAttention.swift)."""
    res, rounds, squares = [], [], []

    def scale(start, factor):
        for p in range(start, len(res)):
            res[p][1] *= factor

    for m in _ATTENTION.finditer(text):
        piece, weight = m.group(0), m.group(1)
        if piece.startswith("\\"):
            res.append([piece[1:], 1.0])
        elif piece == "(":
            rounds.append(len(res))
        elif piece == "[":
            squares.append(len(res))
        elif weight is not None and rounds:
            scale(rounds.pop(), float(weight))
        elif piece == ")" and rounds:
            scale(rounds.pop(), 1.1)
        elif piece == "]" and squares:
            scale(squares.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(_BREAK.split(piece)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for start in rounds:
        scale(start, 1.1)
    for start in squares:
        scale(start, 1 / 1.1)
    if not res:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return res


class Chunk:
    def __init__(self):
        self.tokens, self.weights, self.fixes = [], [], []  # fixes: (position in tokens, name, n)


def _tokens(tokenizer, text):
    return tokenizer(text, add_special_tokens=False, truncation=False).input_ids


def chunk(tokenizer, text, embs=None):
    """A1111's chunks of `text`: list of dicts {ids, weights, embeddings: [(position incl. BOS, name, n)]}."""
    embs = embs or {}
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    comma = tokenizer.get_vocab().get(",</w>")
    lookup = {}
    for name, vectors in embs.items():
        ids = _tokens(tokenizer, name)
        lookup.setdefault(ids[0], []).append((ids, name, int(vectors.shape[0])))
    for k in lookup:
        lookup[k] = sorted(lookup[k], key=lambda e: len(e[0]), reverse=True)

    runs = parse(text)
    chunks, cur, last_comma = [], Chunk(), -1

    def close():
        nonlocal cur, last_comma
        n = CHUNK - len(cur.tokens)
        ids = [bos] + cur.tokens + [eos] * max(n, 0) + [eos]
        if pad != eos:
            first = ids.index(eos)
            ids = ids[:first + 1] + [pad] * (len(ids) - first - 1)
        chunks.append(dict(ids=ids, weights=[1.0] + cur.weights + [1.0] * max(n, 0) + [1.0],
                           embeddings=[(p + 1, name, k) for p, name, k in cur.fixes]))
        cur, last_comma = Chunk(), -1

    for run_text, weight in runs:
        if run_text == "BREAK" and weight == -1:
            close()
            continue
        toks = _tokens(tokenizer, run_text)
        pos = 0
        while pos < len(toks):
            tok = toks[pos]
            if tok == comma:
                last_comma = len(cur.tokens)
            elif len(cur.tokens) == CHUNK and last_comma != -1 and len(cur.tokens) - last_comma <= COMMA_BACKTRACK:
                cut = last_comma + 1
                moved = (cur.tokens[cut:], cur.weights[cut:], [(p - cut, nm, k) for p, nm, k in cur.fixes if p >= cut])
                cur.tokens, cur.weights = cur.tokens[:cut], cur.weights[:cut]
                cur.fixes = [f for f in cur.fixes if f[0] < cut]
                close()
                cur.tokens, cur.weights, cur.fixes = moved
            if len(cur.tokens) == CHUNK:
                close()
            match = next((e for e in lookup.get(tok, []) if toks[pos:pos + len(e[0])] == e[0]), None)
            if match is None:
                cur.tokens.append(tok)
                cur.weights.append(weight)
                pos += 1
                continue
            ids, name, n = match
            if len(cur.tokens) + n > CHUNK:
                close()
            cur.fixes.append((len(cur.tokens), name, n))
            cur.tokens += [0] * n
            cur.weights += [weight] * n
            pos += len(ids)
    if cur.tokens or not chunks:
        close()
    return chunks


def _hidden(text_encoder, ids, fixes, embs, clip_skip):
    """Text encoder output for one chunk [1, 77, d], embedding vectors placed into the token embeddings."""
    def replace(module, inputs, output):
        out = output.clone()
        for position, name, n in fixes:
            out[0, position:position + n] = embs[name][:n].to(out.dtype)
        return out

    hook = text_encoder.embeddings.token_embedding.register_forward_hook(replace)
    try:
        o = text_encoder(input_ids=torch.tensor([ids]), output_hidden_states=True)
    finally:
        hook.remove()
    if clip_skip == 0:
        return o.last_hidden_state
    return text_encoder.final_layer_norm(o.hidden_states[-(clip_skip + 1)])


@torch.no_grad()
def encode(text_encoder, tokenizer, text, embs=None, clip_skip=0):
    """[1, 77 * chunks, d]: each chunk encoded alone, A1111 "Original" emphasis, chunks concatenated."""
    embs = embs or {}
    zs = []
    for c in chunk(tokenizer, text, embs):
        z = _hidden(text_encoder, c["ids"], c["embeddings"], embs, clip_skip)
        w = torch.asarray(c["weights"], dtype=torch.float32)
        m0 = z.mean()
        z = z * w.reshape(1, -1, 1)
        z = z * (m0 / z.mean())
        zs.append(z)
    return torch.cat(zs, dim=1)


def pad_to(z, chunks, empty):
    """Appends the empty prompt's chunk until z has `chunks` chunks of 77."""
    have = z.shape[1] // empty.shape[1]
    return torch.cat([z] + [empty] * (chunks - have), dim=1) if chunks > have else z
