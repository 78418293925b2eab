"""Images for the synthetic world: concepts drawn as coloured, patterned shapes (or scene layouts) at random
pose and size among clutter, and `photo_like` 1/f images for benchmarks. Crude on purpose: cheap to draw
(docs/costs.md) yet distinct enough to be learned at 64 px."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from tagstream.tools.synth.concepts import COLOURS, PATTERNS, SHAPES, Concept
from tagstream.tools.synth.paint import Canvas, fill_polys, gradient, hsv, place, random_colour, shape_polys, texture
from tagstream.tools.synth.scenes import draw_scene


def _pattern(
    pattern: str, y0: int, y1: int, x0: int, x1: int, cx: float, cy: float, radius: float, angle: float
) -> NDArray[np.float32]:
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
    raise ValueError(f"pattern {pattern!r} not in {PATTERNS}")


def draw_object(
    canvas: Canvas, concept: Concept, rng: np.random.Generator, *, cx: float, cy: float, radius: float
) -> None:
    """Draw one instance of an object concept: its shape, colour (jittered) and pattern, with shading."""
    height, width, _ = canvas.shape
    h, s, v = COLOURS[concept.colour]
    base = hsv(h + rng.uniform(-8, 8), s + rng.uniform(-0.1, 0.1), v + rng.uniform(-0.1, 0.05))
    second = np.full(3, 20.0, np.float32) if v > 0.6 else np.full(3, 235.0, np.float32)
    angle = rng.uniform(0, 2 * math.pi)

    def colour(y0: int, y1: int, x0: int, x1: int) -> Canvas:
        pat = _pattern(concept.pattern, y0, y1, x0, x1, cx, cy, radius, angle)[..., None]
        yy = (np.arange(y0, y1, dtype=np.float32)[:, None, None] - cy) / (2 * radius)
        shade = np.clip(1.05 - 0.3 * yy, 0.75, 1.2)  # lit from above
        return (base * (1 - pat) + second * pat) * shade

    fill_polys(canvas, place(shape_polys(concept.shape), cx, cy, radius, angle), colour)


def _clutter(canvas: Canvas, rng: np.random.Generator, n: int) -> None:
    """Small, greyish distractor shapes: background noise a model must learn to ignore."""
    height, width, _ = canvas.shape
    side = min(height, width)
    for _ in range(n):
        r = rng.uniform(0.03, 0.08) * side
        polys = place(
            shape_polys(SHAPES[int(rng.integers(len(SHAPES)))]),
            rng.uniform(0, width),
            rng.uniform(0, height),
            r,
            rng.uniform(0, 6.3),
        )
        fill_polys(canvas, polys, random_colour(rng, s=(0.0, 0.2), v=(0.3, 0.8)))


def generic_background(rng: np.random.Generator, height: int, width: int) -> Canvas:
    """A background that names no concept: a plain wall, a gradient, or a wall above a table (texture comes later)."""
    kind = int(rng.integers(3))
    top = random_colour(rng, s=(0.05, 0.35), v=(0.45, 0.9))
    if kind == 0:
        canvas = np.broadcast_to(top, (height, width, 3)).copy()
    elif kind == 1:
        canvas = gradient(height, width, top, random_colour(rng, s=(0.05, 0.35), v=(0.35, 0.9)))
    else:
        canvas = np.broadcast_to(top, (height, width, 3)).copy()
        y = int(rng.uniform(0.5, 0.8) * height)
        canvas[y:] = random_colour(rng, s=(0.1, 0.5), v=(0.25, 0.7))
    return canvas


def render(
    concepts: list[Concept], rng: np.random.Generator, *, width: int, height: int, clutter: bool = True
) -> NDArray[np.uint8]:
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
        for copy in range(copies):
            radius = rng.uniform(0.16, 0.3) * side / (1.0 + 0.35 * (len(objects) + copies - 2))
            if len(objects) == 1 and copies == 1:
                cx, cy = (
                    rng.uniform(radius * 0.8, width - radius * 0.8),
                    rng.uniform(radius * 0.8, height - radius * 0.8),
                )
            else:
                q = int(slots[(k * 2 + copy) % 4])
                cx = (q % 2 + rng.uniform(0.3, 0.7)) * width / 2
                cy = (q // 2 + rng.uniform(0.3, 0.7)) * height / 2
            draw_object(canvas, concept, rng, cx=cx, cy=cy, radius=radius)
    canvas *= np.float32(rng.uniform(0.85, 1.12))  # exposure
    # one 1/f texture over everything: surfaces, lighting and sensor noise in a single FFT
    canvas += texture(
        rng, height, width, alpha=1.1, contrast=rng.uniform(4, 9) if scenes else rng.uniform(7, 16), chroma=0.3
    )
    return np.clip(canvas, 0, 255).astype(np.uint8)


def photo_like(rng: np.random.Generator, width: int = 500, height: int = 375) -> NDArray[np.uint8]:
    """A (height, width, 3) uint8 image with natural-image statistics: a 1/f amplitude spectrum with random
    phase and correlated channels, over a vertical light gradient and a few flat-coloured shapes with edges.
    At 500x375 it encodes to roughly 50-110 KB as a Pillow JPEG at quality 90, like an ImageNet photo."""
    if width < 1 or height < 1:
        raise ValueError(f"photo_like: width and height must be >= 1, got {width}x{height}")
    mean = random_colour(rng, s=(0.1, 0.5), v=(0.35, 0.75))
    canvas = gradient(
        height, width, mean * np.float32(rng.uniform(1.0, 1.3)), mean * np.float32(rng.uniform(0.6, 0.95))
    )
    side = min(width, height)
    for _ in range(int(rng.integers(3, 8))):
        polys = place(
            shape_polys(SHAPES[int(rng.integers(len(SHAPES)))]),
            rng.uniform(0, width),
            rng.uniform(0, height),
            rng.uniform(0.08, 0.35) * side,
            rng.uniform(0, 6.3),
        )
        fill_polys(canvas, polys, random_colour(rng, s=(0.1, 0.8), v=(0.15, 0.95)))
    canvas += texture(rng, height, width, alpha=rng.uniform(0.9, 1.05), contrast=rng.uniform(18, 28), chroma=0.35)
    return np.clip(canvas, 0, 255).astype(np.uint8)
