"""Deterministic procedural generator of wide landscape images with captions.

Every image is a function of (seed, index) only: `generate(index, seed)` returns an RGB uint8
array of shape (512, W, 3), W in {1024, 1536, 2048}, plus its attributes and a list of
captions built from them. Pure Python + numpy.

Layout is always vertical: sky on top, horizon between 45 % and 70 % of the height, ground at
the bottom, so a 512x512 window anywhere in the panorama sees a complete landscape.

Attributes:
  time     dawn | noon | sunset | night   (sky gradient, sun/moon, stars, light colour)
  terrain  mountains | hills | desert | sea | lake | forest
  snowy    snow-capped peaks (mountains, lake scenes)
  clouds   none | some | overcast
  fog      bool

Run `python landscapes.py --out DIR --count N` to write sample PNGs and captions.
"""

import argparse
import json
import os

import numpy as np

HEIGHT = 512
WIDTHS = (1024, 1536, 2048)
TIMES = ("dawn", "noon", "sunset", "night")
TERRAINS = ("mountains", "hills", "desert", "sea", "lake", "forest")
# Probability that a mountain or lake scene is snow-capped. Changing it changes no other draw
# (the uniform is drawn either way), so every other attribute of every index stays the same.
SNOWY_SHARE = 0.55
# Deep snow: snow reaches further down the slopes (cap +0.35 of the ridge height), covers all but
# the steepest shaded faces, and every snowy mountain scene has a snowfield in front. Snow then
# fills a large part of the picture, as sand does in a desert, instead of thin bright bands a small
# model blurs into grey. Off keeps the shipped model's data byte for byte (no draw changes either way).
DEEP_SNOW = False


# ---------------------------------------------------------------------------------------------
# Noise: value noise on a lattice, interpolated with cubic B-spline weights, separably, by
# matrix products (fast in numpy).

def _bspline_matrix(n_out, cells, offset=0.0):
    """(n_out, cells + 3) matrix interpolating lattice values at n_out evenly spaced points."""
    t = (np.arange(n_out) + 0.5) / n_out * cells + offset
    i = np.floor(t).astype(np.int64)
    f = t - i
    w = np.stack([
        (1 - f) ** 3 / 6,
        (3 * f ** 3 - 6 * f ** 2 + 4) / 6,
        (-3 * f ** 3 + 3 * f ** 2 + 3 * f + 1) / 6,
        f ** 3 / 6,
    ], axis=1)
    m = np.zeros((n_out, cells + 4), np.float32)
    rows = np.arange(n_out)
    for k in range(4):
        np.add.at(m, (rows, np.clip(i + k, 0, cells + 3)), w[:, k])
    return m


def noise1d(rng, n, cells, octaves=1, persistence=0.5):
    """Fractal 1D noise, roughly in [-1, 1]."""
    out = np.zeros(n, np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        c = max(1, int(round(cells * 2 ** o)))
        m = _bspline_matrix(n, c, rng.uniform(0, 1))
        out += amp * (m @ rng.uniform(-1, 1, c + 4).astype(np.float32))
        total += amp
        amp *= persistence
    return out / total * 1.7


def noise2d(rng, h, w, cells_y, cells_x, octaves=1, persistence=0.5):
    """Fractal 2D noise, roughly in [-1, 1]."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cy = max(1, int(round(cells_y * 2 ** o)))
        cx = max(1, int(round(cells_x * 2 ** o)))
        my = _bspline_matrix(h, cy, rng.uniform(0, 1))
        mx = _bspline_matrix(w, cx, rng.uniform(0, 1))
        g = rng.uniform(-1, 1, (cy + 4, cx + 4)).astype(np.float32)
        out += amp * (my @ g @ mx.T)
        total += amp
        amp *= persistence
    return out / total * 1.7


def smoothstep(a, b, x):
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def mix(a, b, t):
    return a + (b - a) * t


def col(*rgb):
    return np.array(rgb, np.float32)


# ---------------------------------------------------------------------------------------------
# Time of day: sky palette, light, ambient.

PALETTES = {
    # top, middle, horizon, sun/glow colour, light colour, light strength, ambient strength
    "dawn": dict(top=col(0.20, 0.25, 0.50), mid=col(0.55, 0.52, 0.72), horizon=col(1.00, 0.74, 0.62),
                 glow=col(1.00, 0.80, 0.55), light=col(1.00, 0.82, 0.72), ls=0.85, amb=0.45),
    "noon": dict(top=col(0.16, 0.38, 0.80), mid=col(0.38, 0.60, 0.92), horizon=col(0.78, 0.87, 0.97),
                 glow=col(1.00, 0.98, 0.90), light=col(1.00, 0.98, 0.92), ls=1.0, amb=0.55),
    "sunset": dict(top=col(0.12, 0.12, 0.35), mid=col(0.62, 0.32, 0.42), horizon=col(1.00, 0.55, 0.20),
                   glow=col(1.00, 0.62, 0.25), light=col(1.00, 0.58, 0.32), ls=0.85, amb=0.35),
    "night": dict(top=col(0.01, 0.015, 0.05), mid=col(0.03, 0.05, 0.13), horizon=col(0.08, 0.12, 0.24),
                  glow=col(0.85, 0.88, 0.95), light=col(0.45, 0.52, 0.75), ls=0.50, amb=0.22),
}


def jitter_palette(rng, p):
    q = dict(p)
    for k in ("top", "mid", "horizon"):
        q[k] = np.clip(p[k] * rng.uniform(0.9, 1.1, 3).astype(np.float32), 0, 1)
    return q


def render_sky(rng, h, w, horizon, pal, time, clouds, fog):
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    t = np.clip(y / horizon, 0, 1.3)  # 0 at top, 1 at horizon
    a = smoothstep(0.0, 0.75, t)[..., None]
    b = smoothstep(0.55, 1.05, t)[..., None]
    sky = mix(mix(pal["top"], pal["mid"], a), pal["horizon"], b)
    sky = np.broadcast_to(sky, (h, w, 3)).copy()

    # sun / moon position
    sx = rng.uniform(0.1, 0.9) * w
    if time == "noon":
        sy = rng.uniform(-0.2, 0.25) * horizon
        radius = rng.uniform(12, 18)
    elif time == "night":
        sy = rng.uniform(0.12, 0.55) * horizon
        radius = rng.uniform(11, 20)
    else:
        sy = horizon - rng.uniform(-0.05, 0.22) * horizon
        radius = rng.uniform(16, 26)
    dx, dy = x - sx, y - sy
    d = np.sqrt(dx * dx + dy * dy)
    dh = np.sqrt((dx * 0.35) ** 2 + dy * dy)  # horizontally stretched glow

    if time == "night":
        # stars: soft dots of varied brightness, fewer near the horizon haze
        n = int(w * horizon / 260)
        stars = np.zeros((h, w), np.float32)
        px = rng.integers(1, w - 1, n)
        py = rng.integers(1, max(2, int(horizon) - 1), n)
        br = rng.uniform(0.25, 1.0, n) ** 2.2
        big = rng.uniform(0, 1, n) < 0.25
        np.maximum.at(stars, (py, px), br)
        for ox, oy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            np.maximum.at(stars, (py[big] + oy, px[big] + ox), br[big] * 0.5)
        stars *= (1 - smoothstep(0.55, 1.0, t[:, 0]))[:, None]
        twinkle = col(0.95, 0.95, 1.0)
        sky = sky + stars[..., None] * twinkle
        # faint milky-way band
        if rng.uniform() < 0.5:
            band = np.exp(-((y - (rng.uniform(0.1, 0.5) * horizon + (x - w / 2) * rng.uniform(-0.2, 0.2))) / 40) ** 2)
            band = band * (0.5 + 0.5 * noise2d(rng, h, w, 4, w / 60, 3))
            sky = sky + np.clip(band, 0, 1)[..., None] * col(0.05, 0.06, 0.09)
        # moon with halo; crescent or full
        halo = np.exp(-d / (radius * 3.0))[..., None] * col(0.10, 0.11, 0.14)
        sky = sky + halo
        disc = smoothstep(radius + 1.0, radius - 1.0, d)
        if rng.uniform() < 0.5:
            ang = rng.uniform(0, 2 * np.pi)
            d2 = np.sqrt((dx - np.cos(ang) * radius * 0.7) ** 2 + (dy - np.sin(ang) * radius * 0.7) ** 2)
            disc = disc * (1 - smoothstep(radius + 1.0, radius - 1.0, d2) * 0.92)
        mottling = 0.9 + 0.1 * noise2d(rng, h, w, h / 12, w / 12, 1)
        sky = mix(sky, (col(0.96, 0.95, 0.86) * mottling[..., None]), disc[..., None])
    else:
        strength = {"dawn": 0.65, "noon": 0.35, "sunset": 0.85}[time]
        glow = (np.exp(-dh / (horizon * 0.35)) * strength + np.exp(-d / (radius * 2.5)) * 0.5)
        sky = sky + glow[..., None] * pal["glow"] * 0.6
        disc = smoothstep(radius + 1.5, radius - 1.5, d)
        sun_col = col(1.0, 0.98, 0.9) if time == "noon" else mix(pal["glow"], col(1, 1, 0.9), 0.5)
        sky = mix(sky, sun_col, disc[..., None])

    if clouds != "none":
        cover = 0.35 if clouds == "some" else 0.85
        n = noise2d(rng, h, w, rng.uniform(3, 5), w / rng.uniform(180, 320), 5, 0.55)
        # flatter, denser clouds toward the horizon
        n = n + 0.25 * (t[:, :1] - 0.5)
        thr = 0.55 - cover * 0.9
        dens = smoothstep(thr, thr + 0.35, n) * (1 - smoothstep(0.85, 1.02, t))
        # shading: darker where density increases downward (cloud bottoms)
        nb = np.roll(n, -6, axis=0)
        shade = np.clip(0.6 + 2.5 * (n - nb), 0.0, 1.0)[..., None]
        if time == "noon":
            lit, dark = col(0.98, 0.98, 0.99), col(0.62, 0.65, 0.72)
        elif time == "dawn":
            lit, dark = col(1.0, 0.82, 0.80), col(0.50, 0.45, 0.58)
        elif time == "sunset":
            lit, dark = col(1.0, 0.62, 0.38), col(0.38, 0.22, 0.32)
        else:
            lit, dark = col(0.22, 0.24, 0.32), col(0.05, 0.06, 0.10)
        if clouds == "overcast":
            lit, dark = lit * 0.85, dark * 0.85
        ccol = mix(dark, lit, shade)
        sky = mix(sky, ccol, (dens * (0.95 if clouds == "overcast" else 0.9))[..., None])
    return np.clip(sky, 0, 1.5), (sx, sy, radius)


# ---------------------------------------------------------------------------------------------
# Terrain layers. Each layer is drawn back to front: a top profile y(x) and a colour per pixel.

class Canvas:
    def __init__(self, rng, h, w, horizon, pal, time, fog, sun):
        self.rng, self.h, self.w, self.horizon = rng, h, w, horizon
        self.pal, self.time, self.fog, self.sun = pal, time, fog, sun
        self.light = pal["light"] * pal["ls"]
        self.ambient = mix(pal["horizon"], pal["mid"], 0.5) * pal["amb"]
        self.light_dir = 1.0 if sun[0] < w / 2 else -1.0  # light comes from the sun's side
        self.yy = np.arange(h, dtype=np.float32)[:, None]
        self.haze = pal["horizon"] * (0.55 if time == "night" else 0.9)
        if fog:
            self.haze = mix(self.haze, col(0.75, 0.77, 0.8) * (0.25 if time == "night" else 1.0), 0.5)

    def lit(self, albedo, diffuse):
        """albedo (..., 3), diffuse factor (...)"""
        return albedo * (self.ambient + self.light * diffuse[..., None])

    def atmos(self, rgb, depth):
        """Aerial perspective: depth 0 (near) .. 1 (far)."""
        amount = depth * (0.75 if self.fog else 0.45)
        return mix(rgb, self.haze, amount)


def paint(img, profile, layer, feather=1.0):
    """Composite `layer` (h, w, 3) below `profile` (w,) with an antialiased edge."""
    y = np.arange(img.shape[0], dtype=np.float32)[:, None]
    a = np.clip((y - profile[None, :]) / feather + 0.5, 0, 1)[..., None]
    img *= (1 - a)
    img += a * layer
    return a[..., 0]


def box_blur1d(v, r):
    if r < 1:
        return v
    k = np.ones(2 * r + 1, np.float32) / (2 * r + 1)
    return np.convolve(np.pad(v, r, mode="edge"), k, mode="valid")


def face_shading(cv, prof, gain, scales=(2, 6, 16, 40), fall=60.0):
    """2D light factor for a terrain face below silhouette `prof`: the slope of the silhouette,
    blurred more and more with the distance below it (ridges flowing down into the slope)."""
    below = np.clip(cv.yy - prof[None, :], 0, None)  # (h, w)
    faces = []
    for r in scales:
        slope = np.gradient(box_blur1d(prof, r))
        faces.append(np.tanh(slope * gain))
    out = np.zeros((cv.h, cv.w), np.float32)
    # weights of each scale as a function of depth below the crest
    centers = [0.0, fall * 0.5, fall * 1.5, fall * 3.5]
    wsum = np.zeros_like(out)
    for f, c in zip(faces, centers):
        wgt = np.exp(-((below - c) / (fall * 0.8)) ** 2) + 1e-4
        out += wgt * f[None, :]
        wsum += wgt
    return cv.light_dir * out / wsum


def mountains(cv, img, base, snowy, layers=3):
    rng, h, w = cv.rng, cv.h, cv.w
    tops = []
    for li in range(layers):
        depth = 1.0 - li / max(1, layers - 1) if layers > 1 else 0.5
        amp = rng.uniform(110, 230) * (0.55 + 0.45 * depth)
        ridged = np.zeros(w, np.float32)
        amp_o, tot = 1.0, 0.0
        cells = w / rng.uniform(250, 420)
        for o in range(6):
            n = noise1d(rng, w, cells * 2 ** o, 1)
            ridged += amp_o * (1 - np.abs(n))
            tot += amp_o
            amp_o *= 0.5
        ridged = ridged / tot
        ridged = (ridged - ridged.min()) / (ridged.max() - ridged.min() + 1e-6)
        ridged = ridged ** 1.6
        offset = base + li * rng.uniform(12, 30)
        prof = offset - amp * (0.15 + 0.85 * ridged)
        rock = mix(col(0.30, 0.27, 0.25), col(0.26, 0.26, 0.29), rng.uniform())
        tex = noise2d(rng, h, w, h / 40, w / 30, 3)
        streak = noise2d(rng, h, w, h / 60, w / 6, 2)  # vertical gullies
        shade = face_shading(cv, prof, 0.9)
        diffuse = np.clip(0.62 + 0.5 * shade + 0.08 * tex + 0.06 * streak, 0.12, 1.2)
        albedo = rock * (0.9 + 0.12 * tex[..., None])
        below = cv.yy - prof[None, :]
        height = (offset - prof)[None, :]  # how high the ridge is above the range's base
        if snowy:
            frac = rng.uniform(0.35, 0.6) + (0.35 if DEEP_SNOW else 0.0)
            cap = frac * height * (0.4 + 0.6 * height / amp)
            snow = smoothstep(0.0, 8.0, cap - below + 25 * tex + 12 * streak)
            lo = -0.85 if DEEP_SNOW else -0.55
            snow = snow * smoothstep(lo, lo + 0.3, shade + 0.3 * tex)  # steep shaded faces keep rock
            albedo = mix(albedo, col(0.95, 0.96, 1.0), snow[..., None])
            diffuse = mix(diffuse, np.clip(0.75 + 0.35 * shade, 0.35, 1.1), snow)
        else:
            green = smoothstep(0.25, 0.0, (offset - cv.yy) / amp + 0.1 * tex) * (1 - depth)
            albedo = mix(albedo, col(0.20, 0.28, 0.14), green[..., None])
        rgb = cv.lit(albedo, diffuse)
        if snowy:  # snow keeps some of its whiteness under coloured light
            white = albedo * (cv.ambient + cv.pal["ls"] * diffuse[..., None]) * 0.95
            rgb = mix(rgb, white, 0.35 * snow[..., None])
        rgb = cv.atmos(rgb, depth * 0.9 + 0.1)
        paint(img, prof, rgb)
        tops.append(prof)
    return tops


def hills(cv, img, base, layers=3, palette="green"):
    rng, h, w = cv.rng, cv.h, cv.w
    for li in range(layers):
        depth = 1.0 - li / max(1, layers - 1) if layers > 1 else 0.5
        amp = rng.uniform(25, 70) * (1.2 - 0.5 * depth)
        prof = base + li * rng.uniform(20, 40) - amp * (0.5 + 0.5 * noise1d(rng, w, w / rng.uniform(350, 700), 3, 0.35))
        if palette == "green":
            albedo0 = mix(col(0.25, 0.45, 0.15), col(0.42, 0.52, 0.20), rng.uniform())
        else:
            albedo0 = mix(col(0.30, 0.36, 0.18), col(0.45, 0.40, 0.22), rng.uniform())
        tex = noise2d(rng, h, w, h / 30, w / 30, 3)
        face = np.clip(0.8 + 0.4 * face_shading(cv, prof, 0.6, scales=(2, 8, 24, 60), fall=40.0), 0.3, 1.2)
        # darker lower down (hill shading toward valley)
        below = np.clip((cv.yy - prof[None, :]) / 120, 0, 1)
        diffuse = face * (0.9 + 0.1 * tex) * (1 - 0.25 * below)
        albedo = albedo0 * (0.9 + 0.12 * tex[..., None])
        rgb = cv.atmos(cv.lit(albedo, diffuse), depth * 0.7)
        paint(img, prof, rgb)
    return prof


def forest_band(cv, img, base, density=1.0, depth=0.3):
    """A band of conifers whose trunks stand on `base` (y of ground)."""
    rng, h, w = cv.rng, cv.h, cv.w
    ground = base + 8 * noise1d(rng, w, w / 300, 2)
    top = ground.copy()
    n = int(w / 5 * density)
    xs = rng.uniform(0, w, n)
    heights = rng.uniform(18, 48, n) * (1.0 - 0.4 * depth)
    widths = heights * rng.uniform(0.22, 0.32, n)
    xi = np.arange(w, dtype=np.float32)
    for x0, th, tw in zip(xs, heights, widths):
        lo, hi = int(max(0, x0 - tw)), int(min(w, x0 + tw + 1))
        if hi <= lo:
            continue
        seg = xi[lo:hi]
        g = ground[int(np.clip(x0, 0, w - 1))]
        tree_top = g - th * (1 - np.abs(seg - x0) / tw)
        top[lo:hi] = np.minimum(top[lo:hi], tree_top)
    albedo0 = mix(col(0.08, 0.20, 0.10), col(0.12, 0.24, 0.12), rng.uniform())
    tex = noise2d(rng, h, w, h / 6, w / 4, 2)
    diffuse = 0.6 + 0.15 * tex
    rgb = cv.atmos(cv.lit(albedo0 * (0.9 + 0.2 * tex[..., None]), diffuse), depth)
    paint(img, top, rgb)
    return ground


def dunes(cv, img, base, layers=4):
    rng, h, w = cv.rng, cv.h, cv.w
    sand = mix(col(0.86, 0.66, 0.40), col(0.90, 0.74, 0.48), rng.uniform())
    for li in range(layers):
        depth = 1.0 - li / max(1, layers - 1)
        amp = rng.uniform(20, 60) * (1.3 - 0.6 * depth)
        x = np.arange(w, dtype=np.float32)
        period = rng.uniform(250, 600) * (1.2 - 0.4 * depth)
        phase = rng.uniform(0, 1) + 0.25 * noise1d(rng, w, w / 800, 2)
        u = (x / period + phase) % 1.0
        # asymmetric dune: gentle windward slope, steep lee side
        skew = rng.uniform(0.6, 0.8)
        shape = np.where(u < skew, u / skew, (1 - u) / (1 - skew))
        shape = shape ** 1.5
        prof = base + li * rng.uniform(18, 32) - amp * (0.3 + 0.7 * shape) - 10 * noise1d(rng, w, w / 400, 2)
        shade = face_shading(cv, prof, 0.7, scales=(1, 3, 8, 20), fall=25.0)
        face = np.clip(0.78 + 0.55 * shade, 0.2, 1.3)
        ripples = 0.5 + 0.5 * np.sin((cv.yy * 0.9 + 6 * noise2d(rng, h, w, h / 60, w / 60, 2)) * (0.35 + 0.2 * li))
        tex = noise2d(rng, h, w, h / 40, w / 40, 2)
        diffuse = face * (0.92 + 0.05 * ripples + 0.05 * tex)
        rgb = cv.atmos(cv.lit(sand * (0.95 + 0.05 * tex[..., None]), diffuse), depth * 0.6)
        paint(img, prof, rgb)


def water(cv, img, top, sky_img, reflect_rows, calm=True, tint=col(0.05, 0.18, 0.30)):
    """Water from row `top` to the bottom, reflecting `sky_img` rows mirrored about `reflect_rows`."""
    rng, h, w = cv.rng, cv.h, cv.w
    y0 = int(top)
    ys = np.arange(y0, h, dtype=np.float32)
    dist = ys - top + 1.0
    # perspective: waves get larger toward the viewer
    waves = noise2d(rng, h - y0, w, (h - y0) / 3, w / 25, 3, 0.5)
    waves2 = noise2d(rng, h - y0, w, (h - y0) / 1.5, w / 80, 2, 0.5)
    scale = (dist / (h - top))[:, None]
    rough = 0.6 if calm else 1.6
    offs = (waves * 6 * rough * (0.3 + scale)).astype(np.float32)
    src = np.clip(reflect_rows - dist[:, None] + offs, 0, h - 1).astype(np.int64)
    xs = np.clip(np.arange(w)[None, :] + (waves2 * 4 * rough * scale).astype(np.int64), 0, w - 1)
    refl = sky_img[src, xs]
    fres = (0.55 + 0.3 * (1 - scale))[..., None]  # more reflective at grazing angles (far)
    base = tint * (cv.pal["amb"] + 0.6 * cv.pal["ls"])
    rgb = mix(base, refl, fres)
    # wave highlights / troughs
    rgb = rgb * (1 + 0.12 * rough * waves[..., None] * (0.4 + scale[..., None]))
    # sun / moon glitter column
    sx, sy, r = cv.sun
    if sy < cv.horizon + 10:
        dxc = np.abs(np.arange(w)[None, :] - sx)
        width = r * (1.2 + 5.0 * scale)
        column = np.exp(-(dxc / width) ** 2)
        sparkle = smoothstep(0.2, 0.7, waves2 * 0.6 + waves * 0.6)
        glint = column * sparkle * (1.0 if cv.time != "noon" else 0.7)
        gcol = cv.pal["glow"] if cv.time != "night" else col(0.85, 0.85, 0.8)
        rgb = rgb + glint[..., None] * gcol * 0.8
    layer = np.zeros_like(img)
    layer[y0:] = rgb
    prof = np.full(w, top, np.float32)
    paint(img, prof, layer)


def foreground(cv, img, base, kind):
    rng, h, w = cv.rng, cv.h, cv.w
    prof = base - 12 * (0.5 + 0.5 * noise1d(rng, w, w / 300, 3))
    tex = noise2d(rng, h, w, h / 10, w / 10, 3)
    if kind == "grass":
        albedo = col(0.22, 0.38, 0.12) * (0.85 + 0.2 * tex[..., None])
    elif kind == "snow":
        albedo = col(0.92, 0.94, 0.98) * (0.93 + 0.07 * tex[..., None])
    elif kind == "sand":
        albedo = col(0.85, 0.70, 0.48) * (0.9 + 0.1 * tex[..., None])
    else:  # rock / shore
        albedo = col(0.30, 0.28, 0.26) * (0.8 + 0.3 * tex[..., None])
    rgb = cv.lit(albedo, 0.75 + 0.1 * tex)
    paint(img, prof, rgb)


# ---------------------------------------------------------------------------------------------
# Scenes and captions.

def sample_attributes(rng):
    terrain = TERRAINS[rng.integers(len(TERRAINS))]
    time = TIMES[rng.integers(len(TIMES))]
    snowy = bool(terrain in ("mountains", "lake") and rng.uniform() < SNOWY_SHARE) or \
        bool(terrain == "forest" and rng.uniform() < 0.2)
    clouds = ("none", "some", "overcast")[rng.choice(3, p=[0.45, 0.4, 0.15])]
    if terrain == "desert":
        clouds = "none" if rng.uniform() < 0.7 else "some"
    if time == "night" and clouds == "overcast":
        clouds = "some"
    fog = bool(rng.uniform() < (0.22 if time in ("dawn", "noon") else 0.1)) and terrain != "desert"
    width = WIDTHS[rng.integers(len(WIDTHS))]
    return dict(terrain=terrain, time=time, snowy=snowy, clouds=clouds, fog=fog, width=width)


TIME_PHRASES = {
    "dawn": ["at dawn", "at sunrise", "in the early morning"],
    "noon": ["at noon", "on a sunny day", "in daylight"],
    "sunset": ["at sunset", "at dusk", "in the evening"],
    "night": ["at night", "under a starry night sky", "by moonlight"],
}
SUBJECTS = {
    ("mountains", True): ["snowy mountains", "snow-capped mountains", "a snowy mountain range"],
    ("mountains", False): ["rocky mountains", "a mountain range", "mountains"],
    ("hills", False): ["rolling hills", "green hills", "rolling green hills"],
    ("desert", False): ["desert dunes", "sand dunes", "a desert"],
    ("sea", False): ["a calm sea", "the ocean", "the sea"],
    ("lake", True): ["a lake below snowy mountains", "a mountain lake", "a lake with snowy mountains"],
    ("lake", False): ["a lake below mountains", "a mountain lake", "a lake"],
    ("forest", True): ["a snowy forest", "a pine forest in snow", "a winter forest"],
    ("forest", False): ["a pine forest", "a forest on hills", "a forest"],
}


def captions(attrs):
    """A few captions for one image, all built from its attributes (first one is canonical)."""
    t, terr, snowy = attrs["time"], attrs["terrain"], attrs["snowy"]
    subjects = SUBJECTS[(terr, snowy if (terr, snowy) in SUBJECTS else False)]
    weather = []
    if attrs["clouds"] == "some":
        weather.append("with clouds")
    if attrs["clouds"] == "overcast":
        weather.append("under an overcast sky")
    if attrs["fog"]:
        weather.append("in fog")
    out = []
    for i, s in enumerate(subjects):
        tp = TIME_PHRASES[t][i % len(TIME_PHRASES[t])]
        if t == "night" and terr == "sea" and i == 0:
            tp = "under a starry night sky"
        c = f"{s} {tp}"
        if weather and i != 2:
            c += " " + " and ".join(weather)
        out.append(c)
    # short forms
    out.append(subjects[0])
    word = {"dawn": "a dawn", "noon": "a sunny", "sunset": "a sunset", "night": "a night"}[t]
    out.append(f"{word} landscape with {subjects[0].replace('a ', '', 1) if subjects[0].startswith('a ') else subjects[0]}")
    return out


def render(rng, attrs):
    h, w = HEIGHT, attrs["width"]
    time, terrain = attrs["time"], attrs["terrain"]
    pal = jitter_palette(rng, PALETTES[time])
    if terrain in ("sea",):
        horizon = rng.uniform(0.5, 0.66) * h
    elif terrain in ("mountains", "lake"):
        horizon = rng.uniform(0.58, 0.70) * h
    else:
        horizon = rng.uniform(0.5, 0.64) * h
    sky, sun = render_sky(rng, h, w, horizon, pal, time, attrs["clouds"], attrs["fog"])
    img = sky.copy()
    cv = Canvas(rng, h, w, horizon, pal, time, attrs["fog"], sun)

    if terrain == "mountains":
        mountains(cv, img, horizon, attrs["snowy"], layers=int(rng.integers(2, 4)))
        if rng.uniform() < 0.5:
            forest_band(cv, img, horizon + rng.uniform(40, 80), density=rng.uniform(0.5, 1.0), depth=0.2)
        front = h - rng.uniform(25, 70)
        snow_front = attrs["snowy"] and (rng.uniform() < 0.5 or DEEP_SNOW)
        foreground(cv, img, front, "snow" if snow_front else "grass")
    elif terrain == "hills":
        hills(cv, img, horizon, layers=int(rng.integers(3, 5)))
        if rng.uniform() < 0.4:
            forest_band(cv, img, horizon + rng.uniform(60, 120), density=rng.uniform(0.3, 0.7), depth=0.3)
    elif terrain == "desert":
        dunes(cv, img, horizon, layers=int(rng.integers(3, 5)))
    elif terrain == "sea":
        sky_copy = img.copy()
        if rng.uniform() < 0.35:  # distant headland / islands on the horizon
            prof = horizon - np.clip(25 * noise1d(rng, w, w / 300, 3) - 5, 0, None)
            land = cv.atmos(cv.lit(col(0.2, 0.25, 0.2), np.full((h, w), 0.7, np.float32)), 0.8)
            paint(img, prof, land)
        water(cv, img, horizon, sky_copy, horizon, calm=True)
        if rng.uniform() < 0.35:
            foreground(cv, img, h - rng.uniform(20, 50), "sand" if time != "night" else "rock")
    elif terrain == "lake":
        mountains(cv, img, horizon, attrs["snowy"], layers=int(rng.integers(2, 4)))
        shore = horizon + rng.uniform(8, 30)
        forest_band(cv, img, shore, density=rng.uniform(0.4, 1.0), depth=0.25)
        scene = img.copy()
        water(cv, img, shore + 2, scene, shore + 2, calm=True, tint=col(0.05, 0.15, 0.2))
        if rng.uniform() < 0.5:
            foreground(cv, img, h - rng.uniform(15, 45), "rock")
    elif terrain == "forest":
        if attrs["snowy"]:
            mountains(cv, img, horizon, True, layers=1)
        else:
            hills(cv, img, horizon - 20, layers=2)
        g = horizon + rng.uniform(10, 30)
        for k in range(3):
            forest_band(cv, img, g + k * rng.uniform(45, 80), density=rng.uniform(0.8, 1.4), depth=0.5 - 0.2 * k)
        foreground(cv, img, h - rng.uniform(10, 40), "snow" if attrs["snowy"] else "grass")

    if attrs["fog"]:
        # ground fog band around and below the horizon, thinning upward
        y = np.arange(h, dtype=np.float32)[:, None]
        n = noise2d(rng, h, w, 3, w / 250, 3)
        band = np.exp(-((y - horizon - 30) / 90) ** 2) * (0.55 + 0.25 * n)
        img = mix(img, cv.haze, np.clip(band, 0, 0.85)[..., None])

    # global grade: night is dark and blue, slight vignette-free noise to avoid banding
    if time == "night":
        img = img * col(0.9, 0.95, 1.1)
    img = img + rng.normal(0, 0.006, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def attributes(index, seed=0):
    """The attributes of image `index` without rendering it (same rng stream as generate)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    return sample_attributes(rng)


def generate(index, seed=0, max_width=None):
    """(image uint8 (512, W, 3), attributes dict, captions list) for one index. Deterministic.
    `max_width` caps W (the scene is then rendered narrower; attributes are unchanged)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    attrs = sample_attributes(rng)
    if max_width is not None and attrs["width"] > max_width:
        attrs = dict(attrs, width=max_width)
    img = render(rng, attrs)
    return img, attrs, captions(attrs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from PIL import Image
    os.makedirs(args.out, exist_ok=True)
    meta = []
    for i in range(args.start, args.start + args.count):
        img, attrs, caps = generate(i, args.seed)
        Image.fromarray(img).save(os.path.join(args.out, f"landscape_{i:05d}.png"))
        meta.append(dict(index=i, attributes=attrs, captions=caps))
        print(i, caps[0])
    with open(os.path.join(args.out, "captions.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
