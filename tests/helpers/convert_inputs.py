"""Conversion inputs for tests: a JPEG of one colour, and a source with one input of every rejection kind."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from tagstream.tools.convert.image import ImageOptions


def jpeg(color, size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def make_mixed_source(root: Path) -> Path:
    """One input of every rejection kind between good images, plus re-encode kinds."""
    root.mkdir(parents=True, exist_ok=True)
    good = jpeg((10, 20, 30))
    big = Image.new("RGB", (300, 200), (0, 0, 255))
    files = {
        "good0.jpg": good,
        "empty.jpg": b"",
        "text.jpg": b"this is text, not pixels",
        "trunc.jpg": jpeg((5, 5, 5), (200, 150))[:400],
        "small.jpg": jpeg((1, 1, 1), (8, 64)),
        "bomb.png": _png(Image.new("L", (700, 700))),
        "huge.bin": b"\xff\xd8" + b"\0" * 300_000,
        "good.png": _png(Image.new("RGB", (50, 40), (200, 0, 0))),
        "big.jpg": _jpeg_img(big),
        "prog.jpg": _jpeg_img(Image.new("RGB", (50, 40), (0, 200, 0)), progressive=True),
    }
    png = bytearray(_png(Image.fromarray((np.random.default_rng(1).random((40, 40, 3)) * 255).astype(np.uint8))))
    at = bytes(png).index(b"IDAT") + 20
    png[at : at + 30] = bytes(b ^ 0x55 for b in png[at : at + 30])
    files["corrupt.png"] = bytes(png)
    for name, data in files.items():
        (root / name).write_bytes(data)
    names = list(files) + ["missing.jpg"]
    lines = [json.dumps({"image": n, "tags": [f"#{n.split('.')[0]}", "all"]}) for n in names]
    lines.insert(3, "garbage line")
    (root / "m.jsonl").write_text("\n".join(lines) + "\n")
    return root / "m.jsonl"


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _jpeg_img(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


MIXED_OPTS = ImageOptions(min_side=16, max_side=128, max_pixels=400_000, max_file_bytes=200_000)
