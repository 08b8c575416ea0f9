#!/usr/bin/env python3
"""Does an upscale keep the composition and add detail? (numpy + PIL; for the README / notes.)

    python tools/analysis/upscale_stats.py INPUT.png UPSCALED.png

Composition: the upscaled image box-averaged back to the input size, compared with the input
(mean absolute difference in 8-bit levels, and PSNR). Detail: mean squared Laplacian of the
luminance (high-frequency energy) of the upscaled image against the input merely resized to the
same size with Lanczos (what the upscale starts from).
"""
import sys

import numpy as np
from PIL import Image


def luminance(a):
    return a[..., 0] * 0.2126 + a[..., 1] * 0.7152 + a[..., 2] * 0.0722


def laplacian_energy(a):
    y = luminance(a)
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float(np.mean(lap ** 2))


def main():
    src = Image.open(sys.argv[1]).convert("RGB")
    out = Image.open(sys.argv[2]).convert("RGB")
    a = np.asarray(src, dtype=np.float64)
    b = np.asarray(out, dtype=np.float64)
    fy, fx = b.shape[0] // a.shape[0], b.shape[1] // a.shape[1]
    assert b.shape[0] == a.shape[0] * fy and b.shape[1] == a.shape[1] * fx, "integer scale factors only"
    down = b.reshape(a.shape[0], fy, a.shape[1], fx, 3).mean(axis=(1, 3))
    mad = float(np.mean(np.abs(down - a)))
    psnr = float(10 * np.log10(255 ** 2 / np.mean((down - a) ** 2)))
    resized = np.asarray(src.resize(out.size, Image.LANCZOS), dtype=np.float64)
    e_up, e_base = laplacian_energy(b), laplacian_energy(resized)
    print(f"composition: downscaled result vs input: mean |diff| {mad:.2f} levels, PSNR {psnr:.1f} dB")
    print(f"detail: Laplacian energy {e_up:.2f} (upscaled) vs {e_base:.2f} (Lanczos only), ratio {e_up / e_base:.2f}")


if __name__ == "__main__":
    main()
