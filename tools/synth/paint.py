"""Painting primitives for the synthetic images: HSV colours, gradients, 1/f colour texture, and polygons
rasterized by Pillow and blended into a float canvas only inside their bounding box (cost follows the shape)."""

from __future__ import annotations

import colorsys
import functools
import math

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from tagstream.tools.synth.concepts import SHAPES

Canvas = NDArray[np.float32]  # (H, W, 3), values 0..255
Polys = list[tuple[list[tuple[float, float]], int]]  # polygons in order, fill 255 adds, fill 0 cuts a hole


@functools.lru_cache(maxsize=16)
def spectrum(height: int, width: int, alpha: float) -> NDArray[np.float32]:
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


def spectral_fields(rng: np.random.Generator, height: int, width: int, n: int, alpha: float) -> Canvas:
    """n zero-mean fields of about unit variance with amplitude spectrum 1/f^alpha and random phase, (n, H, W)."""
    # complex Gaussian noise = random phase with Rayleigh amplitudes, cheaper than exp(1j * phase)
    noise = rng.standard_normal((n, height, width // 2 + 1, 2), dtype=np.float32).view(np.complex64)[..., 0]
    noise *= spectrum(height, width, round(alpha, 2))
    return np.fft.irfft2(noise, s=(height, width)).astype(np.float32, copy=False)


def texture(
    rng: np.random.Generator, height: int, width: int, *, alpha: float, contrast: float, chroma: float
) -> Canvas:
    """Colour 1/f texture around 0, (H, W, 3): full-resolution luminance plus weaker colour-opponent fields
    at half resolution (natural chroma is smooth, and JPEG's 4:2:0 subsampling drops finer chroma anyway)."""
    h2, w2 = (height + 1) // 2, (width + 1) // 2
    lum = spectral_fields(rng, 2 * h2, 2 * w2, 1, alpha)[0]
    c1, c2 = spectral_fields(rng, h2, w2, 2, alpha) * np.float32(chroma)
    # per-channel offsets: red vs green-blue (c1) and green vs blue (c2), built at half resolution and
    # spread over 2x2 pixel blocks by broadcasting (one pass, no upsampled copies)
    offsets = np.stack([c1, c2 - 0.5 * c1, -c2 - 0.5 * c1])
    tex = lum.reshape(1, h2, 2, w2, 2) + offsets[:, :, None, :, None]
    tex *= np.float32(contrast)
    return np.moveaxis(tex.reshape(3, 2 * h2, 2 * w2)[:, :height, :width], 0, -1)


def hsv(h: float, s: float, v: float) -> NDArray[np.float32]:
    return (
        np.array(colorsys.hsv_to_rgb((h / 360.0) % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), np.float32) * 255
    )


def random_colour(rng: np.random.Generator, *, s: tuple[float, float], v: tuple[float, float]) -> NDArray[np.float32]:
    return hsv(rng.uniform(0, 360), rng.uniform(*s), rng.uniform(*v))


def gradient(
    height: int, width: int, top: NDArray[np.float32], bottom: NDArray[np.float32], y0: float = 0.0, y1: float = 1.0
) -> Canvas:
    t = np.clip((np.linspace(0.0, 1.0, height, dtype=np.float32) - y0) / max(y1 - y0, 1e-6), 0, 1)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).copy()


def rasterize(height: int, width: int, polys: Polys) -> NDArray[np.float32]:
    """Rasterize polygons in order (fill 255 adds, fill 0 cuts a hole); returns 0..1 float mask."""
    m = Image.new("L", (width, height), 0)
    d = ImageDraw.Draw(m)
    for pts, fill in polys:
        if len(pts) >= 3:
            d.polygon(pts, fill=fill)
    return np.asarray(m, dtype=np.float32) / 255.0


def blend(canvas: Canvas, mask: NDArray[np.float32], colour: NDArray[np.float32]) -> None:
    m = mask[..., None]
    canvas *= 1 - m
    canvas += m * colour


def fill_polys(canvas: Canvas, polys: Polys, colour) -> None:
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
    blend(canvas[y0:y1, x0:x1], rasterize(y1 - y0, x1 - x0, local), c)


def circle(
    r: float = 1.0,
    cx: float = 0.0,
    cy: float = 0.0,
    n: int = 40,
    a0: float = 0.0,
    a1: float = 2 * math.pi,
    ry: float | None = None,
):
    ry = r if ry is None else ry
    return [
        (cx + r * math.cos(t), cy + ry * math.sin(t)) for t in np.linspace(a0, a1, n, endpoint=a1 - a0 < 2 * math.pi)
    ]


def shape_polys(shape: str) -> list[tuple[list[tuple[float, float]], int]]:
    """A shape in unit coordinates (about [-1, 1]^2) as polygons with fill 255 (add) or 0 (cut)."""
    if shape == "circle":
        return [(circle(0.9), 255)]
    if shape == "ellipse":
        return [(circle(1.0, ry=0.55), 255)]
    if shape == "ring":
        return [(circle(1.0), 255), (circle(0.5), 0)]
    if shape == "square":
        return [([(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)], 255)]
    if shape == "triangle":
        return [(circle(1.0, n=3, a0=-math.pi / 2, a1=-math.pi / 2 + 2 * math.pi), 255)]
    if shape == "star":
        pts = [
            (
                (1.0 if k % 2 == 0 else 0.42) * math.cos(-math.pi / 2 + k * math.pi / 5),
                (1.0 if k % 2 == 0 else 0.42) * math.sin(-math.pi / 2 + k * math.pi / 5),
            )
            for k in range(10)
        ]
        return [(pts, 255)]
    if shape == "cross":
        a, b = 0.28, 0.95
        return [
            (
                [
                    (-a, -b),
                    (a, -b),
                    (a, -a),
                    (b, -a),
                    (b, a),
                    (a, a),
                    (a, b),
                    (-a, b),
                    (-a, a),
                    (-b, a),
                    (-b, -a),
                    (-a, -a),
                ],
                255,
            )
        ]
    if shape == "diamond":
        return [([(0.0, -1.0), (0.6, 0.0), (0.0, 1.0), (-0.6, 0.0)], 255)]
    if shape == "crescent":
        return [(circle(0.95), 255), (circle(0.8, cx=0.45, cy=-0.2), 0)]
    if shape == "hexagon":
        return [(circle(0.9, n=6, a0=0.0, a1=2 * math.pi), 255)]
    if shape == "bar":
        return [([(-0.3, -1.0), (0.3, -1.0), (0.4, 1.0), (-0.4, 1.0)], 255)]
    if shape == "semicircle":
        return [(circle(1.0, cy=0.35, a0=math.pi, a1=2 * math.pi, n=24), 255)]
    if shape == "double":
        return [(circle(0.42, cy=-0.5), 255), (circle(0.58, cy=0.4), 255)]
    raise ValueError(f"shape {shape!r} not in {SHAPES}")


def place(polys, cx: float, cy: float, radius: float, angle: float):
    c, s = math.cos(angle), math.sin(angle)
    return [
        ([(cx + radius * (x * c - y * s), cy + radius * (x * s + y * c)) for x, y in pts], fill) for pts, fill in polys
    ]
