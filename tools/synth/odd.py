"""Odd and broken inputs for conversion tests: valid images in every format and mode a converter must
re-encode, and broken entries (empty, truncated, not an image, missing, unreadable JSON) it must reject."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

# kind -> file extension; each is a decodable image the converter should accept (possibly re-encoded)
ODD_KINDS: dict[str, str] = {
    "png": "png",
    "png_rgba": "png",
    "png16": "png",
    "webp": "webp",
    "gif": "gif",
    "progressive_jpeg": "jpg",
    "cmyk_jpeg": "jpg",
    "grey_jpeg": "jpg",
    "jpeg_named_png": "png",  # a JPEG behind a .png name: trust the bytes, not the name
    "oversized_jpeg": "jpg",  # 3000x2000, above any sensible --max-side
    "tiny_jpeg": "jpg",  # 24x18, below any sensible --min-side (a rejection by size)
    "bomb_png": "png",  # 10000x10000 one-bit PNG of a few KB: above any sensible --max-pixels
}

# broken entries, cycled through when --corrupt N asks for N of them
CORRUPT_KINDS = ("zero_byte", "truncated_jpeg", "not_an_image", "missing_file", "bad_json", "bad_record")


def save_jpeg(img: Image.Image, path: Path, *, quality: int = 90) -> int:
    """Baseline JPEG (what a clean input looks like); returns the size in bytes."""
    img.save(path, "JPEG", quality=quality)
    return path.stat().st_size


def write_odd(kind: str, pixels: NDArray[np.uint8], path: Path, *, quality: int = 90) -> tuple[int, int]:
    """Write `pixels` (H, W, 3) as the odd kind; returns the written image's (width, height)."""
    img = Image.fromarray(pixels)
    if kind == "png":
        img.save(path, "PNG")
    elif kind == "png_rgba":
        alpha = Image.linear_gradient("L").resize(img.size)
        rgba = img.convert("RGBA")
        rgba.putalpha(alpha)
        rgba.save(path, "PNG")
    elif kind == "png16":
        grey = np.asarray(img.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(grey).save(path, "PNG")  # mode I;16
    elif kind == "webp":
        img.save(path, "WEBP", quality=quality)
    elif kind == "gif":
        img.convert("P", palette=Image.Palette.ADAPTIVE).save(path, "GIF")
    elif kind == "progressive_jpeg":
        img.save(path, "JPEG", quality=quality, progressive=True)
    elif kind == "cmyk_jpeg":
        img.convert("CMYK").save(path, "JPEG", quality=quality)
    elif kind == "grey_jpeg":
        img.convert("L").save(path, "JPEG", quality=quality)
    elif kind == "jpeg_named_png":
        img.save(path, "JPEG", quality=quality)
    elif kind == "oversized_jpeg":
        img = img.resize((3000, 2000), Image.Resampling.BILINEAR)
        img.save(path, "JPEG", quality=quality)
    elif kind == "tiny_jpeg":
        img = img.resize((24, 18), Image.Resampling.BOX)
        img.save(path, "JPEG", quality=quality)
    elif kind == "bomb_png":
        img = Image.new("1", (10000, 10000), 0)
        img.save(path, "PNG", optimize=False)
    else:
        raise ValueError(f"odd kind {kind!r} not in {tuple(ODD_KINDS)}")
    return img.size


def corrupt_line(kind: str, image: str) -> str:
    """The jsonl line of a broken entry: valid JSON naming `image`, except for the two bad-line kinds."""
    if kind == "bad_json":
        return '{"image": "' + image + '", "tags": ["#oops", '
    if kind == "bad_record":
        return json.dumps({"picture": image, "tags": "#not_a_list"})
    if kind not in CORRUPT_KINDS:
        raise ValueError(f"corrupt kind {kind!r} not in {CORRUPT_KINDS}")
    return json.dumps({"image": image, "tags": ["#broken"]})


def write_corrupt(kind: str, pixels: NDArray[np.uint8], path: Path) -> None:
    """Write the file of a broken entry (nothing for kinds whose fault is in the line or a missing file)."""
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "truncated_jpeg":
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=90)
        data = buf.getvalue()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not_an_image":
        path.write_text("this is a text file with a .jpg name, not an image\n")
    elif kind not in CORRUPT_KINDS:
        raise ValueError(f"corrupt kind {kind!r} not in {CORRUPT_KINDS}")
