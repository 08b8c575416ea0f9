"""Seam statistic of a panorama PNG: the mean absolute colour step between neighbouring columns
(averaged over rows and RGB, in 0-255 levels), split into columns at window borders (every
`--period` pixels; 64 = 8 latent columns at the default stride), at the other 8-pixel latent-block
boundaries, and everywhere else. The same statistic as DefaultModelTests.columnStepProfile.

    python tools/analysis/seam_stats.py out.png [more.png ...] [--period 64]
"""
import argparse

import numpy as np
from PIL import Image


def stats(path, period):
    a = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
    steps = np.abs(a[:, 1:] - a[:, :-1]).mean(axis=(0, 2))  # step between column x and x + 1
    x = np.arange(steps.size) + 1                            # the boundary's right-hand column
    borders = steps[x % period == 0].mean()
    blocks = steps[(x % 8 == 0) & (x % period != 0)].mean()
    others = steps[x % 8 != 0].mean()
    return borders, blocks, others


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+")
    ap.add_argument("--period", type=int, default=64, help="window-border spacing in pixels (8 x stride)")
    a = ap.parse_args()
    for path in a.images:
        b, k, o = stats(path, a.period)
        print(f"{path}: window borders {b:.3f}, other block boundaries {k:.3f}, elsewhere {o:.3f}, "
              f"borders / blocks {b / k:.3f}")
