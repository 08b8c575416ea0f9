#!/usr/bin/env python3
"""Small PNGs of every common kind, written chunk by chunk (no imaging library), for the PNG reader tests.

    python3 tools/reference/make_png_fixtures.py     # writes Tests/Fixtures/images/*.png + expected.json

Each image is 13x7. expected.json maps file -> the 8-bit RGB pixels (row-major, interleaved) the reader
must return: grey expands to (g, g, g), 16-bit samples keep their high byte, 1-bit grey becomes 0/255,
palette indices are looked up, alpha (and tRNS) is dropped without compositing.
"""
import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "Tests", "Fixtures", "images")
W, H = 13, 7


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png(depth, color, rows, extra=b""):
    ihdr = struct.pack(">IIBBBBB", W, H, depth, color, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def v(x, y, c=0):
    return (x * 19 + y * 37 + c * 71) % 256


def main():
    os.makedirs(OUT, exist_ok=True)
    files, expected = {}, {}
    # 8-bit grey
    files["grey8"] = png(8, 0, [bytes(v(x, y) for x in range(W)) for y in range(H)])
    expected["grey8"] = [v(x, y) for y in range(H) for x in range(W) for _ in range(3)]
    # 16-bit grey: high byte v, low byte something else
    files["grey16"] = png(16, 0, [b"".join(struct.pack(">H", v(x, y) * 256 + v(x, y, 2)) for x in range(W)) for y in range(H)])
    expected["grey16"] = expected["grey8"]
    # 1-bit grey: a checkerboard, packed 8 pixels per byte, MSB first
    def bits(y):
        out, acc = bytearray(), 0
        for x in range(16):
            acc = (acc << 1) | (((x + y) % 2) if x < W else 0)
            if x % 8 == 7:
                out.append(acc)
                acc = 0
        return bytes(out)
    files["grey1"] = png(1, 0, [bits(y) for y in range(H)])
    expected["grey1"] = [255 * ((x + y) % 2) for y in range(H) for x in range(W) for _ in range(3)]
    # grey + alpha, 8-bit
    files["greyalpha8"] = png(8, 4, [bytes(b for x in range(W) for b in (v(x, y), 255 - v(x, y))) for y in range(H)])
    expected["greyalpha8"] = expected["grey8"]
    # RGB 8 and 16
    files["rgb8"] = png(8, 2, [bytes(v(x, y, c) for x in range(W) for c in range(3)) for y in range(H)])
    expected["rgb8"] = [v(x, y, c) for y in range(H) for x in range(W) for c in range(3)]
    files["rgb16"] = png(16, 2, [b"".join(struct.pack(">H", v(x, y, c) * 256 + 255 - v(x, y, c)) for x in range(W) for c in range(3)) for y in range(H)])
    expected["rgb16"] = expected["rgb8"]
    # RGBA 8
    files["rgba8"] = png(8, 6, [bytes(b for x in range(W) for b in (v(x, y, 0), v(x, y, 1), v(x, y, 2), x * 10)) for y in range(H)])
    expected["rgba8"] = expected["rgb8"]
    # palette (4 bits, 16 entries) with a tRNS chunk
    palette = [(i * 16, 255 - i * 16, (i * 53) % 256) for i in range(16)]
    plte = chunk(b"PLTE", bytes(c for p in palette for c in p)) + chunk(b"tRNS", bytes(range(0, 160, 10)))
    def nibbles(y):
        idx = [(x + 3 * y) % 16 for x in range(W)] + [0]
        return bytes((idx[i] << 4) | idx[i + 1] for i in range(0, W + 1, 2))
    files["palette4"] = png(4, 3, [nibbles(y) for y in range(H)], plte)
    expected["palette4"] = [c for y in range(H) for x in range(W) for c in palette[(x + 3 * y) % 16]]
    for name, data in files.items():
        with open(os.path.join(OUT, name + ".png"), "wb") as f:
            f.write(data)
    # a PNG cut short in its image data
    with open(os.path.join(OUT, "truncated.png"), "wb") as f:
        f.write(files["rgb8"][:len(files["rgb8"]) // 2])
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"width": W, "height": H, "pixels": expected}, f)


if __name__ == "__main__":
    main()
