"""Scene concepts as whole-image layouts (beach, sunset, city, ...): one painter per scene, named in
SCENE_PAINTERS; geometry and colours jittered per image so no two scenes are the same picture."""

from __future__ import annotations

import math

import numpy as np

from tagstream.tools.synth.concepts import SCENES
from tagstream.tools.synth.paint import Canvas, blend, circle, fill_polys, gradient, hsv


def _beach(rng: np.random.Generator, H: int, W: int) -> Canvas:
    """Sky over a band of sea over sand."""
    j = rng.uniform
    y0, y1 = j(0.3, 0.45), j(0.5, 0.62)
    c = gradient(H, W, hsv(j(200, 215), j(0.45, 0.6), 0.85), hsv(j(195, 210), 0.2, 0.97), 0, y0)
    c[int(y0 * H) :] = gradient(H, W, hsv(j(180, 200), 0.8, 0.7), hsv(j(175, 190), 0.6, 0.8))[int(y0 * H) :]
    c[int(y1 * H) :] = hsv(j(38, 48), j(0.3, 0.45), j(0.8, 0.92))
    return c


def _sunset(rng: np.random.Generator, H: int, W: int) -> Canvas:
    """Purple-to-orange sky, a half sun on the horizon, dark water below."""
    j = rng.uniform
    y0 = j(0.55, 0.72)
    c = gradient(H, W, hsv(j(250, 280), 0.6, 0.35), hsv(j(20, 35), 0.9, 1.0), 0, y0)
    sx, r = j(0.2, 0.8) * W, j(0.1, 0.18) * H
    fill_polys(c, [(circle(r, sx, y0 * H, a0=math.pi, a1=2 * math.pi), 255)], hsv(j(45, 55), 0.85, 1.0))
    c[int(y0 * H) :] = gradient(H, W, hsv(260, 0.5, 0.3), hsv(250, 0.5, 0.12))[int(y0 * H) :]
    return c


def _forest(rng: np.random.Generator, H: int, W: int) -> Canvas:
    """Dark green, tree trunks and canopy blobs."""
    j = rng.uniform
    c = gradient(H, W, hsv(j(100, 130), 0.55, 0.35), hsv(j(90, 110), 0.6, 0.18))
    for _ in range(int(rng.integers(5, 10))):
        x, w = j(0, 1) * W, j(0.025, 0.06) * W
        fill_polys(
            c, [([(x - w, H), (x + w, H), (x + w * 0.6, 0), (x - w * 0.6, 0)], 255)], hsv(j(20, 30), 0.6, j(0.2, 0.35))
        )
    for _ in range(int(rng.integers(6, 12))):
        polys = [(circle(j(0.08, 0.18) * W, j(0, 1) * W, j(0, 0.45) * H, ry=j(0.05, 0.12) * H), 255)]
        fill_polys(c, polys, hsv(j(95, 135), 0.65, j(0.3, 0.6)))
    return c


def _mountain(rng: np.random.Generator, H: int, W: int) -> Canvas:
    """Pale sky, grey peaks with snow caps, a strip of grass."""
    j = rng.uniform
    c = gradient(H, W, hsv(j(205, 220), 0.5, 0.85), hsv(210, 0.15, 0.97), 0, 0.6)
    for _ in range(int(rng.integers(2, 5))):
        px, py, half = j(0.1, 0.9) * W, j(0.12, 0.4) * H, j(0.3, 0.55) * W
        grey = hsv(j(210, 230), j(0.1, 0.25), j(0.35, 0.6))
        fill_polys(c, [([(px, py), (px + half, H * 0.85), (px - half, H * 0.85)], 255)], grey)
        k = 0.25
        cap = [(px, py), (px + half * k, py + (H * 0.85 - py) * k), (px - half * k, py + (H * 0.85 - py) * k)]
        fill_polys(c, [(cap, 255)], np.full(3, 245.0, np.float32))
    c[int(0.85 * H) :] = hsv(j(90, 120), 0.4, j(0.35, 0.5))
    return c


def _snow(rng: np.random.Generator, H: int, W: int) -> Canvas:
    """Pale sky over white ground, falling flakes."""
    j = rng.uniform
    y0 = j(0.3, 0.45)
    c = gradient(H, W, hsv(j(200, 220), 0.15, 0.8), hsv(210, 0.05, 0.92), 0, y0)
    c[int(y0 * H) :] = gradient(H, W, hsv(210, 0.04, 0.97), hsv(215, 0.12, 0.88))[int(y0 * H) :]
    n = int(rng.integers(40, 120))
    for x, y, r in zip(rng.uniform(0, W, n), rng.uniform(0, H, n), rng.uniform(1.0, 3.0, n)):
        fill_polys(c, [(circle(r, x, y, n=8), 255)], np.full(3, 252.0, np.float32))
    return c


def _city(rng: np.random.Generator, H: int, W: int) -> Canvas:
    """Dusk sky behind a skyline of dark towers with lit windows."""
    j = rng.uniform
    c = gradient(H, W, hsv(j(215, 235), 0.6, 0.45), hsv(j(20, 40), 0.4, 0.85))
    x = -j(0, 0.05) * W
    while x < W:
        w, top = j(0.07, 0.16) * W, j(0.2, 0.65) * H
        fill_polys(c, [([(x, top), (x + w, top), (x + w, H), (x, H)], 255)], hsv(j(200, 240), 0.1, j(0.15, 0.35)))
        win = np.zeros((H, W), np.float32)
        for wy in np.arange(top + 0.03 * H, H - 0.02 * H, 0.05 * H):
            for wx in np.arange(x + 0.02 * W, x + w - 0.02 * W, 0.035 * W):
                if rng.random() < 0.55:
                    win[int(wy) : int(wy + 0.02 * H) + 1, int(wx) : int(wx + 0.012 * W) + 1] = 1
        blend(c, win, hsv(j(45, 55), 0.6, 0.95))
        x += w + j(0, 0.02) * W
    return c


def _ocean(rng: np.random.Generator, H: int, W: int) -> Canvas:
    """A strip of sky over deep blue water with wave crests."""
    j = rng.uniform
    y0 = j(0.05, 0.25)
    c = gradient(H, W, hsv(j(200, 215), 0.3, 0.9), hsv(205, 0.1, 0.97), 0, y0)
    c[int(y0 * H) :] = gradient(H, W, hsv(j(205, 220), 0.8, 0.65), hsv(j(215, 230), 0.9, 0.3))[int(y0 * H) :]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    period, phase = j(0.04, 0.08) * H, j(0, 6.3)
    waves = (np.sin(yy / period * 2 * np.pi + np.sin(xx / (j(0.1, 0.2) * W) + phase) * 2) > 0.85) & (yy > y0 * H)
    blend(c, waves.astype(np.float32), hsv(200, 0.35, 0.9))
    return c


def _rainbow(rng: np.random.Generator, H: int, W: int) -> Canvas:
    """Blue sky, six coloured arcs, green ground."""
    j = rng.uniform
    c = gradient(H, W, hsv(j(200, 215), 0.5, 0.85), hsv(200, 0.1, 0.97))
    cx, cy, r0, band = j(0.3, 0.7) * W, j(0.85, 1.1) * H, j(0.45, 0.75) * min(H, W), j(0.025, 0.04) * min(H, W)
    for k, hue in enumerate((0, 30, 58, 120, 210, 265)):
        polys = [(circle(r0 - k * band, cx, cy, n=60), 255), (circle(r0 - (k + 1) * band, cx, cy, n=60), 0)]
        fill_polys(c, polys, hsv(hue, 0.75, 0.95))
    c[int(0.88 * H) :] = hsv(j(90, 120), 0.5, j(0.4, 0.55))
    return c


def _night(rng: np.random.Generator, H: int, W: int) -> Canvas:
    """Dark sky, scattered stars, a crescent moon."""
    j = rng.uniform
    c = gradient(H, W, hsv(j(225, 245), 0.7, 0.08), hsv(j(220, 240), 0.6, 0.25))
    n = int(rng.integers(50, 150))
    ys, xs = rng.integers(0, H, n), rng.integers(0, W, n)
    c[ys, xs] = 230.0
    mx, my, r = j(0.15, 0.85) * W, j(0.1, 0.4) * H, j(0.06, 0.1) * min(H, W)
    fill_polys(c, [(circle(r, mx, my), 255), (circle(r, mx + r * 0.5, my - r * 0.2), 0)], hsv(50, 0.25, 0.95))
    return c


SCENE_PAINTERS = {
    "beach": _beach,
    "sunset": _sunset,
    "forest": _forest,
    "mountain": _mountain,
    "snow": _snow,
    "city": _city,
    "ocean": _ocean,
    "rainbow": _rainbow,
    "night": _night,
}


def draw_scene(name: str, rng: np.random.Generator, height: int, width: int) -> Canvas:
    """The background layout of a scene concept, float (H, W, 3) in 0..255."""
    if name not in SCENE_PAINTERS:
        raise ValueError(f"scene {name!r} not in {SCENES}")
    return SCENE_PAINTERS[name](rng, height, width)
