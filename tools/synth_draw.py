"""Procedural images for the synthetic world: 1/f "photo-like" textures and concepts drawn as coloured,
patterned shapes or scene layouts with random pose, size, clutter and colour jitter. Crude on purpose:
cheap (a few ms an image) yet distinct enough to be learned at 64 px."""

from __future__ import annotations

import colorsys
import functools
import math

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from .synth_concepts import COLOURS, SHAPES, Concept

Canvas = NDArray[np.float32]  # (H, W, 3), values 0..255


@functools.lru_cache(maxsize=16)
def _spectrum(height: int, width: int, alpha: float) -> NDArray[np.float32]:
    """rfft-domain amplitude 1/f^alpha (zero at DC), scaled so the field it makes has unit variance."""
    fy = np.fft.fftfreq(height).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(width).astype(np.float32)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amp = f ** np.float32(-alpha)
    amp[0, 0] = 0.0
    # Parseval for irfft2 of complex noise with E|z|^2 = 2: var = 2 * sum(amp^2 over the full plane) / (HW)^2,
    # and the full plane holds each rfft column twice except the first (and the Nyquist one for even width)
    twice = np.full(amp.shape[1], 2.0, np.float32)
    twice[0] = 1.0
    if width % 2 == 0:
        twice[-1] = 1.0
    var = 2.0 * float((amp * amp * twice).sum()) / float(height * width) ** 2
    return (amp / np.float32(np.sqrt(var))).astype(np.float32)


def _spectral_fields(rng: np.random.Generator, height: int, width: int, n: int, alpha: float) -> Canvas:
    """n zero-mean fields of about unit variance with amplitude spectrum 1/f^alpha and random phase, (n, H, W)."""
    # complex Gaussian noise = random phase with Rayleigh amplitudes, cheaper than exp(1j * phase)
    noise = rng.standard_normal((n, height, width // 2 + 1, 2), dtype=np.float32).view(np.complex64)[..., 0]
    noise *= _spectrum(height, width, round(alpha, 2))
    return np.fft.irfft2(noise, s=(height, width)).astype(np.float32, copy=False)


def _texture(rng: np.random.Generator, height: int, width: int, *, alpha: float, contrast: float, chroma: float) -> Canvas:
    """Colour 1/f texture around 0, (H, W, 3): full-resolution luminance plus weaker colour-opponent fields
    at half resolution (natural chroma is smooth, and JPEG's 4:2:0 subsampling drops finer chroma anyway)."""
    lum = _spectral_fields(rng, height, width, 1, alpha)
    c1, c2 = _spectral_fields(rng, (height + 1) // 2, (width + 1) // 2, 2, alpha) * np.float32(chroma)
    # per-channel offsets: red vs green-blue (c1) and green vs blue (c2), built at half resolution
    offsets = np.stack([c1, c2 - 0.5 * c1, -c2 - 0.5 * c1])
    tex = np.repeat(np.repeat(offsets, 2, axis=1), 2, axis=2)[:, :height, :width]
    tex += lum
    tex *= np.float32(contrast)
    return np.moveaxis(tex, 0, -1)


def _hsv(h: float, s: float, v: float) -> NDArray[np.float32]:
    return np.array(colorsys.hsv_to_rgb((h / 360.0) % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), np.float32) * 255


def _random_colour(rng: np.random.Generator, *, s: tuple[float, float], v: tuple[float, float]) -> NDArray[np.float32]:
    return _hsv(rng.uniform(0, 360), rng.uniform(*s), rng.uniform(*v))


def _gradient(height: int, width: int, top: NDArray[np.float32], bottom: NDArray[np.float32], y0: float = 0.0, y1: float = 1.0) -> Canvas:
    t = np.clip((np.linspace(0.0, 1.0, height, dtype=np.float32) - y0) / max(y1 - y0, 1e-6), 0, 1)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).copy()


Polys = list[tuple[list[tuple[float, float]], int]]


def _mask(height: int, width: int, polys: Polys) -> NDArray[np.float32]:
    """Rasterize polygons in order (fill 255 adds, fill 0 cuts a hole); returns 0..1 float mask."""
    m = Image.new("L", (width, height), 0)
    d = ImageDraw.Draw(m)
    for pts, fill in polys:
        if len(pts) >= 3:
            d.polygon(pts, fill=fill)
    return np.asarray(m, dtype=np.float32) / 255.0


def _paint(canvas: Canvas, mask: NDArray[np.float32], colour: NDArray[np.float32]) -> None:
    m = mask[..., None]
    canvas *= 1 - m
    canvas += m * colour


def _fill(canvas: Canvas, polys: Polys, colour) -> None:
    """Paint polygons in a colour (an RGB triple, or a function of the box (y0, y1, x0, x1) giving a
    (y1 - y0, x1 - x0, 3) array), touching only their bounding box: cost follows the shape, not the image."""
    height, width, _ = canvas.shape
    pts = np.array([p for poly, fill in polys if fill for p in poly], np.float64)
    if pts.size == 0:
        return
    x0, y0 = np.floor(pts.min(axis=0)).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return
    local = [([(x - x0, y - y0) for x, y in poly], fill) for poly, fill in polys]
    c = colour(y0, y1, x0, x1) if callable(colour) else colour
    _paint(canvas[y0:y1, x0:x1], _mask(y1 - y0, x1 - x0, local), c)


def _circle(r: float = 1.0, cx: float = 0.0, cy: float = 0.0, n: int = 40, a0: float = 0.0, a1: float = 2 * math.pi, ry: float | None = None):
    ry = r if ry is None else ry
    return [(cx + r * math.cos(t), cy + ry * math.sin(t)) for t in np.linspace(a0, a1, n, endpoint=a1 - a0 < 2 * math.pi)]


def shape_polys(shape: str) -> list[tuple[list[tuple[float, float]], int]]:
    """A shape in unit coordinates (about [-1, 1]^2) as polygons with fill 255 (add) or 0 (cut)."""
    if shape == "circle":
        return [(_circle(0.9), 255)]
    if shape == "ellipse":
        return [(_circle(1.0, ry=0.55), 255)]
    if shape == "ring":
        return [(_circle(1.0), 255), (_circle(0.5), 0)]
    if shape == "square":
        return [([(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)], 255)]
    if shape == "triangle":
        return [(_circle(1.0, n=3, a0=-math.pi / 2, a1=-math.pi / 2 + 2 * math.pi), 255)]
    if shape == "star":
        pts = [((1.0 if k % 2 == 0 else 0.42) * math.cos(-math.pi / 2 + k * math.pi / 5),
                (1.0 if k % 2 == 0 else 0.42) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)]
        return [(pts, 255)]
    if shape == "cross":
        a, b = 0.28, 0.95
        return [([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)], 255)]
    if shape == "diamond":
        return [([(0.0, -1.0), (0.6, 0.0), (0.0, 1.0), (-0.6, 0.0)], 255)]
    if shape == "crescent":
        return [(_circle(0.95), 255), (_circle(0.8, cx=0.45, cy=-0.2), 0)]
    if shape == "hexagon":
        return [(_circle(0.9, n=6, a0=0.0, a1=2 * math.pi), 255)]
    if shape == "bar":
        return [([(-0.3, -1.0), (0.3, -1.0), (0.4, 1.0), (-0.4, 1.0)], 255)]
    if shape == "semicircle":
        return [(_circle(1.0, cy=0.35, a0=math.pi, a1=2 * math.pi, n=24), 255)]
    if shape == "double":
        return [(_circle(0.42, cy=-0.5), 255), (_circle(0.58, cy=0.4), 255)]
    raise ValueError(f"shape {shape!r} not in {SHAPES}")


def _place(polys, cx: float, cy: float, radius: float, angle: float):
    c, s = math.cos(angle), math.sin(angle)
    return [([(cx + radius * (x * c - y * s), cy + radius * (x * s + y * c)) for x, y in pts], fill) for pts, fill in polys]


def _pattern(pattern: str, y0: int, y1: int, x0: int, x1: int, cx: float, cy: float, radius: float, angle: float) -> NDArray[np.float32]:
    """0/1 map over the box [y0, y1) x [x0, x1) of where a pattern's second colour shows, in the object's
    own frame (it rotates with the object)."""
    if pattern == "solid":
        return np.zeros((y1 - y0, x1 - x0), np.float32)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    c, s = math.cos(angle), math.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / radius
    v = (-(xx - cx) * s + (yy - cy) * c) / radius
    if pattern == "stripes":
        return ((u * 2.5) % 1.0 < 0.45).astype(np.float32)
    if pattern == "dots":
        du, dv = (u * 2.2) % 1.0 - 0.5, (v * 2.2) % 1.0 - 0.5
        return (du * du + dv * dv < 0.05).astype(np.float32)
    if pattern == "checker":
        return ((np.floor(u * 2.0) + np.floor(v * 2.0)) % 2).astype(np.float32)
    raise ValueError(f"pattern {pattern!r} not in ('solid', 'stripes', 'dots', 'checker')")


def draw_object(canvas: Canvas, concept: Concept, rng: np.random.Generator, *, cx: float, cy: float, radius: float) -> None:
    """Draw one instance of an object concept: its shape, colour (jittered) and pattern, with shading."""
    height, width, _ = canvas.shape
    h, s, v = COLOURS[concept.colour]
    base = _hsv(h + rng.uniform(-8, 8), s + rng.uniform(-0.1, 0.1), v + rng.uniform(-0.1, 0.05))
    second = np.full(3, 20.0, np.float32) if v > 0.6 else np.full(3, 235.0, np.float32)
    angle = rng.uniform(0, 2 * math.pi)

    def colour(y0: int, y1: int, x0: int, x1: int) -> Canvas:
        pat = _pattern(concept.pattern, y0, y1, x0, x1, cx, cy, radius, angle)[..., None]
        yy = (np.arange(y0, y1, dtype=np.float32)[:, None, None] - cy) / (2 * radius)
        shade = np.clip(1.05 - 0.3 * yy, 0.75, 1.2)  # lit from above
        return (base * (1 - pat) + second * pat) * shade

    _fill(canvas, _place(shape_polys(concept.shape), cx, cy, radius, angle), colour)


def _clutter(canvas: Canvas, rng: np.random.Generator, n: int) -> None:
    """Small, greyish distractor shapes: background noise a model must learn to ignore."""
    height, width, _ = canvas.shape
    side = min(height, width)
    for _ in range(n):
        r = rng.uniform(0.03, 0.08) * side
        polys = _place(shape_polys(SHAPES[int(rng.integers(len(SHAPES)))]), rng.uniform(0, width), rng.uniform(0, height), r, rng.uniform(0, 6.3))
        _fill(canvas, polys, _random_colour(rng, s=(0.0, 0.2), v=(0.3, 0.8)))


def generic_background(rng: np.random.Generator, height: int, width: int) -> Canvas:
    """A background that names no concept: a plain wall, a gradient, or a wall above a table (texture comes later)."""
    kind = int(rng.integers(3))
    top = _random_colour(rng, s=(0.05, 0.35), v=(0.45, 0.9))
    if kind == 0:
        canvas = np.broadcast_to(top, (height, width, 3)).copy()
    elif kind == 1:
        canvas = _gradient(height, width, top, _random_colour(rng, s=(0.05, 0.35), v=(0.35, 0.9)))
    else:
        canvas = np.broadcast_to(top, (height, width, 3)).copy()
        y = int(rng.uniform(0.5, 0.8) * height)
        canvas[y:] = _random_colour(rng, s=(0.1, 0.5), v=(0.25, 0.7))
    return canvas


def draw_scene(name: str, rng: np.random.Generator, height: int, width: int) -> Canvas:
    """The background layout of a scene concept, with its geometry and colours jittered."""
    j = lambda a, b: rng.uniform(a, b)  # noqa: E731
    H, W = height, width
    if name == "beach":
        y0, y1 = j(0.3, 0.45), j(0.5, 0.62)
        c = _gradient(H, W, _hsv(j(200, 215), j(0.45, 0.6), 0.85), _hsv(j(195, 210), 0.2, 0.97), 0, y0)
        c[int(y0 * H):] = _gradient(H, W, _hsv(j(180, 200), 0.8, 0.7), _hsv(j(175, 190), 0.6, 0.8))[int(y0 * H):]
        c[int(y1 * H):] = _hsv(j(38, 48), j(0.3, 0.45), j(0.8, 0.92))
    elif name == "sunset":
        y0 = j(0.55, 0.72)
        c = _gradient(H, W, _hsv(j(250, 280), 0.6, 0.35), _hsv(j(20, 35), 0.9, 1.0), 0, y0)
        sx, r = j(0.2, 0.8) * W, j(0.1, 0.18) * H
        _fill(c, [(_circle(r, sx, y0 * H, a0=math.pi, a1=2 * math.pi), 255)], _hsv(j(45, 55), 0.85, 1.0))
        c[int(y0 * H):] = _gradient(H, W, _hsv(260, 0.5, 0.3), _hsv(250, 0.5, 0.12))[int(y0 * H):]
    elif name == "forest":
        c = _gradient(H, W, _hsv(j(100, 130), 0.55, 0.35), _hsv(j(90, 110), 0.6, 0.18))
        for _ in range(int(rng.integers(5, 10))):
            x, w = j(0, 1) * W, j(0.025, 0.06) * W
            _fill(c, [([(x - w, H), (x + w, H), (x + w * 0.6, 0), (x - w * 0.6, 0)], 255)], _hsv(j(20, 30), 0.6, j(0.2, 0.35)))
        for _ in range(int(rng.integers(6, 12))):
            polys = [(_circle(j(0.08, 0.18) * W, j(0, 1) * W, j(0, 0.45) * H, ry=j(0.05, 0.12) * H), 255)]
            _fill(c, polys, _hsv(j(95, 135), 0.65, j(0.3, 0.6)))
    elif name == "mountain":
        c = _gradient(H, W, _hsv(j(205, 220), 0.5, 0.85), _hsv(210, 0.15, 0.97), 0, 0.6)
        for _ in range(int(rng.integers(2, 5))):
            px, py, half = j(0.1, 0.9) * W, j(0.12, 0.4) * H, j(0.3, 0.55) * W
            grey = _hsv(j(210, 230), j(0.1, 0.25), j(0.35, 0.6))
            _fill(c, [([(px, py), (px + half, H * 0.85), (px - half, H * 0.85)], 255)], grey)
            k = 0.25
            cap = [(px, py), (px + half * k, py + (H * 0.85 - py) * k), (px - half * k, py + (H * 0.85 - py) * k)]
            _fill(c, [(cap, 255)], np.full(3, 245.0, np.float32))
        c[int(0.85 * H):] = _hsv(j(90, 120), 0.4, j(0.35, 0.5))
    elif name == "snow":
        y0 = j(0.3, 0.45)
        c = _gradient(H, W, _hsv(j(200, 220), 0.15, 0.8), _hsv(210, 0.05, 0.92), 0, y0)
        c[int(y0 * H):] = _gradient(H, W, _hsv(210, 0.04, 0.97), _hsv(215, 0.12, 0.88))[int(y0 * H):]
        n = int(rng.integers(40, 120))
        for x, y, r in zip(rng.uniform(0, W, n), rng.uniform(0, H, n), rng.uniform(1.0, 3.0, n)):
            _fill(c, [(_circle(r, x, y, n=8), 255)], np.full(3, 252.0, np.float32))
    elif name == "city":
        c = _gradient(H, W, _hsv(j(215, 235), 0.6, 0.45), _hsv(j(20, 40), 0.4, 0.85))
        x = -j(0, 0.05) * W
        while x < W:
            w, top = j(0.07, 0.16) * W, j(0.2, 0.65) * H
            _fill(c, [([(x, top), (x + w, top), (x + w, H), (x, H)], 255)], _hsv(j(200, 240), 0.1, j(0.15, 0.35)))
            win = np.zeros((H, W), np.float32)
            for wy in np.arange(top + 0.03 * H, H - 0.02 * H, 0.05 * H):
                for wx in np.arange(x + 0.02 * W, x + w - 0.02 * W, 0.035 * W):
                    if rng.random() < 0.55:
                        win[int(wy):int(wy + 0.02 * H) + 1, int(wx):int(wx + 0.012 * W) + 1] = 1
            _paint(c, win, _hsv(j(45, 55), 0.6, 0.95))
            x += w + j(0, 0.02) * W
    elif name == "ocean":
        y0 = j(0.05, 0.25)
        c = _gradient(H, W, _hsv(j(200, 215), 0.3, 0.9), _hsv(205, 0.1, 0.97), 0, y0)
        c[int(y0 * H):] = _gradient(H, W, _hsv(j(205, 220), 0.8, 0.65), _hsv(j(215, 230), 0.9, 0.3))[int(y0 * H):]
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        period, phase = j(0.04, 0.08) * H, j(0, 6.3)
        waves = (np.sin(yy / period * 2 * np.pi + np.sin(xx / (j(0.1, 0.2) * W) + phase) * 2) > 0.85) & (yy > y0 * H)
        _paint(c, waves.astype(np.float32), _hsv(200, 0.35, 0.9))
    elif name == "rainbow":
        c = _gradient(H, W, _hsv(j(200, 215), 0.5, 0.85), _hsv(200, 0.1, 0.97))
        cx, cy, r0, band = j(0.3, 0.7) * W, j(0.85, 1.1) * H, j(0.45, 0.75) * min(H, W), j(0.025, 0.04) * min(H, W)
        for k, hue in enumerate((0, 30, 58, 120, 210, 265)):
            polys = [(_circle(r0 - k * band, cx, cy, n=60), 255), (_circle(r0 - (k + 1) * band, cx, cy, n=60), 0)]
            _fill(c, polys, _hsv(hue, 0.75, 0.95))
        c[int(0.88 * H):] = _hsv(j(90, 120), 0.5, j(0.4, 0.55))
    elif name == "night":
        c = _gradient(H, W, _hsv(j(225, 245), 0.7, 0.08), _hsv(j(220, 240), 0.6, 0.25))
        n = int(rng.integers(50, 150))
        ys, xs = rng.integers(0, H, n), rng.integers(0, W, n)
        c[ys, xs] = 230.0
        mx, my, r = j(0.15, 0.85) * W, j(0.1, 0.4) * H, j(0.06, 0.1) * min(H, W)
        _fill(c, [(_circle(r, mx, my), 255), (_circle(r, mx + r * 0.5, my - r * 0.2), 0)], _hsv(50, 0.25, 0.95))
    else:
        raise ValueError(f"scene {name!r} is not a known scene")
    return c


def render(concepts: list[Concept], rng: np.random.Generator, *, width: int, height: int, clutter: bool = True) -> NDArray[np.uint8]:
    """An image showing exactly `concepts` (at most one scene; objects at random pose), uint8 (H, W, 3)."""
    scenes = [c for c in concepts if c.kind == "scene"]
    objects = [c for c in concepts if c.kind == "object"]
    if len(scenes) > 1:
        raise ValueError(f"an image holds at most one scene concept, got {[c.name for c in scenes]}")
    canvas = draw_scene(scenes[0].name, rng, height, width) if scenes else generic_background(rng, height, width)
    if clutter:
        _clutter(canvas, rng, int(rng.integers(0, 4)))
    side = min(width, height)
    slots = rng.permutation(4)  # quadrants, so two concepts rarely cover each other
    for k, concept in enumerate(objects):
        copies = 2 if rng.random() < 0.15 else 1
        for _ in range(copies):
            radius = rng.uniform(0.16, 0.3) * side / (1.0 + 0.35 * (len(objects) + copies - 2))
            if len(objects) == 1 and copies == 1:
                cx, cy = rng.uniform(radius * 0.8, width - radius * 0.8), rng.uniform(radius * 0.8, height - radius * 0.8)
            else:
                q = int(slots[(k * 2 + _) % 4]) if copies == 2 else int(slots[k % 4])
                cx = (q % 2 + rng.uniform(0.3, 0.7)) * width / 2
                cy = (q // 2 + rng.uniform(0.3, 0.7)) * height / 2
            draw_object(canvas, concept, rng, cx=cx, cy=cy, radius=radius)
    canvas *= np.float32(rng.uniform(0.85, 1.12))  # exposure
    # one 1/f texture over everything: surfaces, lighting and sensor noise in a single FFT
    canvas += _texture(rng, height, width, alpha=1.1, contrast=rng.uniform(4, 9) if scenes else rng.uniform(7, 16), chroma=0.3)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def photo_like(rng: np.random.Generator, width: int = 500, height: int = 375) -> NDArray[np.uint8]:
    """A (height, width, 3) uint8 image with natural-image statistics: a 1/f amplitude spectrum with random
    phase and correlated channels, under a sky/ground split and a few flat-coloured objects with edges.
    At 500x375 it encodes to roughly 50-110 KB as a Pillow JPEG at quality 90, like an ImageNet photo."""
    if width < 1 or height < 1:
        raise ValueError(f"photo_like: width and height must be >= 1, got {width}x{height}")
    mean = _random_colour(rng, s=(0.1, 0.5), v=(0.35, 0.75))
    canvas = _gradient(height, width, mean * np.float32(rng.uniform(1.0, 1.3)), mean * np.float32(rng.uniform(0.6, 0.95)))
    side = min(width, height)
    for _ in range(int(rng.integers(3, 8))):
        polys = _place(shape_polys(SHAPES[int(rng.integers(len(SHAPES)))]), rng.uniform(0, width), rng.uniform(0, height),
                       rng.uniform(0.08, 0.35) * side, rng.uniform(0, 6.3))
        _fill(canvas, polys, _random_colour(rng, s=(0.1, 0.8), v=(0.15, 0.95)))
    canvas += _texture(rng, height, width, alpha=rng.uniform(0.9, 1.05), contrast=rng.uniform(18, 28), chroma=0.35)
    return np.clip(canvas, 0, 255).astype(np.uint8)
