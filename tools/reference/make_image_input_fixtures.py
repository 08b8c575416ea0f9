#!/usr/bin/env python3
"""Small JPEG and WebP files, and Pillow's decoding of them, for the image input tests.

    /work/.venv-ref/bin/python tools/reference/make_image_input_fixtures.py
    # writes Tests/Fixtures/images/input/*.{jpg,webp} + expected/*.png + expected.json

Every image is a 37x23 crop of skimage's astronaut (odd sizes on purpose, so chroma subsampling
and MCU padding have partial blocks). expected/<name>.png holds the 8-bit RGB pixels the reader
must return, as Pillow gives them: Image.open, ImageOps.exif_transpose, convert("RGB") (alpha is
dropped, CMYK is converted with Pillow's formula for Adobe-inverted CMYK). expected.json lists
the files the reader must decode (with Pillow's size and the sha256 of its RGB bytes) and the
files it must refuse, each with a word the error message must contain; expected/luma-*.png
hold Pillow's convert("L") of two of them (the mask reader's luma).

Two files carry an XMP orientation (Pillow uses it only when EXIF has no orientation tag).
The EXIF blocks are built by hand (not with PIL.Image.Exif) so that both byte orders and an IFD0
with other entries before the orientation tag are covered.
"""
import hashlib
import io
import json
import os
import struct

from PIL import Image, ImageOps, features

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "images", "input")
SOURCE = "/work/shared/data/images/astronaut.png"
W, H = 37, 23


def exif_block(orientation, big_endian=False, padding_entries=0):
    """An APP1 Exif payload: "Exif\\0\\0" + a TIFF header + IFD0 holding `padding_entries`
    harmless tags (ImageWidth-like LONGs with ascending tag numbers below 0x0112) and then the
    orientation (0x0112, SHORT, count 1)."""
    e = ">" if big_endian else "<"
    head = (b"MM" if big_endian else b"II") + struct.pack(e + "HI", 42, 8)
    entries = []
    for i in range(padding_entries):
        entries.append(struct.pack(e + "HHII", 0x0100 + i, 4, 1, 1000 + i))
    # a SHORT value sits left-justified in the 4-byte field, in the file's byte order
    entries.append(struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0))
    ifd = struct.pack(e + "H", len(entries)) + b"".join(entries) + struct.pack(e + "I", 0)
    return b"Exif\x00\x00" + head + ifd


def jpeg(image, **options):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def webp(image, **options):
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", **options)
    return buffer.getvalue()


def pillow_rgb(data):
    image = Image.open(io.BytesIO(data))
    image.load()
    image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


def pillow_refuses(data):
    try:
        Image.open(io.BytesIO(data)).load()
    except Exception:
        return True
    return False


def main():
    os.makedirs(os.path.join(OUT, "expected"), exist_ok=True)
    src = Image.open(SOURCE).convert("RGB").crop((190, 80, 190 + W, 80 + H))
    # an alpha ramp with fully transparent and fully opaque corners
    alpha = Image.new("L", (W, H))
    alpha.putdata([min(255, (x * 255) // (W - 1) + (y * 4)) for y in range(H) for x in range(W)])
    rgba = src.copy()
    rgba.putalpha(alpha)

    valid = {
        "baseline-420.jpg": jpeg(src, quality=90, subsampling=2),
        "baseline-422.jpg": jpeg(src, quality=90, subsampling=1),
        "baseline-444.jpg": jpeg(src, quality=90, subsampling=0),
        "progressive.jpg": jpeg(src, quality=85, progressive=True),
        "grey.jpg": jpeg(src.convert("L"), quality=90),
        "cmyk.jpg": jpeg(src.convert("CMYK"), quality=90),
        "lossy.webp": webp(src, quality=80),
        "lossless.webp": webp(src, lossless=True),
        "alpha-lossy.webp": webp(rgba, quality=80),
        "alpha-lossless.webp": webp(rgba, lossless=True, exact=True),
    }
    # every orientation; 6 and 7 big-endian, 3 and 8 after other IFD0 entries
    for n in range(2, 9):
        block = exif_block(n, big_endian=n in (6, 7), padding_entries=3 if n in (3, 8) else 0)
        valid[f"orientation-{n}.jpg"] = jpeg(src, quality=90, subsampling=2, exif=block)
    # Pillow's getexif falls back to XMP's tiff:Orientation when EXIF has no orientation tag,
    # and ignores it when EXIF has one
    packet = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    valid["orientation-xmp.jpg"] = jpeg(src, quality=90, subsampling=2, xmp=packet)
    valid["orientation-exif-over-xmp.jpg"] = jpeg(src, quality=90, subsampling=2, exif=exif_block(3), xmp=packet)

    second = src.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    src.save(buffer, "WEBP", save_all=True, append_images=[second], duration=100, quality=50)
    lossy_alpha = valid["alpha-lossy.webp"]
    refused = {
        "truncated.jpg": (valid["baseline-420.jpg"][: len(valid["baseline-420.jpg"]) * 6 // 10], "JPEG"),
        "truncated-progressive.jpg": (valid["progressive.jpg"][: len(valid["progressive.jpg"]) * 6 // 10], "JPEG"),
        "truncated.webp": (valid["lossy.webp"][: len(valid["lossy.webp"]) * 6 // 10], "WebP"),
        "truncated-lossless.webp": (valid["lossless.webp"][: len(valid["lossless.webp"]) * 6 // 10], "WebP"),
        "truncated-alpha.webp": (lossy_alpha[: len(lossy_alpha) // 2], "WebP"),
        "animated.webp": (buffer.getvalue(), "animated"),
        "empty.jpg": (b"", "empty"),
        "text.jpg": (b"This is not an image, whatever its name says.\n", "JPEG"),
    }

    manifest = {"width": W, "height": H, "pillow": Image.__version__ if hasattr(Image, "__version__") else "",
                "libjpeg_turbo": features.version("libjpeg_turbo"), "libwebp": features.version("webp"),
                "decode": {}, "refuse": {}}
    import PIL
    manifest["pillow"] = PIL.__version__
    for name, data in sorted(valid.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        rgb = pillow_rgb(data)
        rgb.save(os.path.join(OUT, "expected", name.rsplit(".", 1)[0] + ".png"), optimize=True)
        manifest["decode"][name] = {"width": rgb.width, "height": rgb.height,
                                    "sha256": hashlib.sha256(rgb.tobytes()).hexdigest()}
    for name, (data, word) in sorted(refused.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        # Pillow refuses these too (the animated one it reads as frames, so it is not checked)
        if name != "animated.webp":
            assert pillow_refuses(data), name
        manifest["refuse"][name] = word
    # the mask reader's luma, as Pillow's convert("L") gives it, for a colour and a CMYK file
    for name in ("lossless.webp", "cmyk.jpg"):
        pillow_rgb(valid[name]).convert("L").save(os.path.join(OUT, "expected", "luma-" + name.rsplit(".", 1)[0] + ".png"), optimize=True)
    # the orientation files share their pixels: exif_transpose must have changed the size of 5..8
    for n in range(5, 9):
        assert manifest["decode"][f"orientation-{n}.jpg"]["width"] == H
    assert manifest["decode"]["orientation-xmp.jpg"]["width"] == H
    assert manifest["decode"]["orientation-exif-over-xmp.jpg"] == manifest["decode"]["orientation-3.jpg"]
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    total = 0
    for root, _, names in os.walk(OUT):
        for n in sorted(names):
            path = os.path.join(root, n)
            total += os.path.getsize(path)
    print(f"{len(valid)} decodable, {len(refused)} refused, {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
