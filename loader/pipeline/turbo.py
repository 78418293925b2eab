"""The CPU decode path: decode only a window of a JPEG and resize it in one C call (loader/pipeline/_jpeg.c,
libjpeg-turbo), run inside the external-source workers. On two cores DALI's CPU decoder and resize
cost twice what this does (docs/loader-bench.md); on GPU the pipeline decodes with nvJPEG instead.

The resize is Pillow's bilinear filter, antialiased when downscaling (torchvision's RandomResizedCrop
on PIL images gives the same pixels within 1, rarely 2: 14-bit taps, and the vertical pass first); with
`dct_scaling`, a window at least 2x the output is decoded at 1/2, 1/4 or 1/8 scale first (fewer pixels to
transform and resize; a different low-pass, docs/loader-bench.md). If the extension did not build (no C compiler or no
libjpeg headers at install time), `available()` is False and the loader falls back to DALI's decoder.

A JPEG whose restart intervals tile its MCU rows (what `convert` stores: `add_restarts`) is decoded from the
intervals the window covers only, cut out as a smaller JPEG in C (loader/pipeline/_restart.c): the same pixels,
entropy decoding in proportion to the window's area instead of everything above and left of its far corner.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data.format import MAX_PIXELS

_HOW = "install libjpeg-turbo's headers (Debian/Ubuntu: libjpeg-dev) and a C compiler, then reinstall tagstream"
try:
    from tagstream.loader.pipeline import _jpeg
except ImportError as exc:  # the optional extension was not built
    _jpeg = None
    _MISSING = f"tagstream.loader.pipeline._jpeg is not built ({exc}); {_HOW}"
else:
    _MISSING = f"tagstream.loader.pipeline._jpeg is not available; {_HOW}"
    _jpeg.set_max_pixels(MAX_PIXELS)  # every decode reads the header first and refuses a larger image


def available() -> bool:
    return _jpeg is not None


def require() -> None:
    if _jpeg is None:
        raise RuntimeError(_MISSING)


def _output(out: NDArray[np.uint8] | None, size: int) -> NDArray[np.uint8]:
    """The (size, size, 3) uint8 array to write into: `out` after checking it, or a new one."""
    if out is None:
        return np.empty((size, size, 3), np.uint8)
    if out.shape != (size, size, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous uint8 array of shape {(size, size, 3)}, got {out.dtype} {out.shape}"
        )
    return out


def crop_resize(
    data: bytes | memoryview | NDArray[np.uint8],
    window: tuple[int, int, int, int],
    size: int,
    *,
    mirror: bool = False,
    antialias: bool = True,
    dct_scaling: bool = False,
    out: NDArray[np.uint8] | None = None,
) -> NDArray[np.uint8]:
    """Decode the (x, y, w, h) window of a JPEG and resize it to (size, size, 3) uint8 RGB.

    With `dct_scaling`, a window at least 2x `size` on both sides is decoded at the coarsest of 1/2, 1/4
    and 1/8 scale that keeps it so (libjpeg's DCT scaling: less IDCT, upsampling, colour conversion and
    resize), then resized: faster, not the same pixels as resizing the full-scale crop (the measured gap
    is in docs/loader-bench.md). Without it, the pixels are torchvision's resized_crop on a Pillow image
    within 1.

    Raises ValueError for data libjpeg rejects, truncated data (other corrupt-data warnings are passed
    over, as Pillow does) and a window outside the image.
    """
    require()
    out = _output(out, size)
    x, y, w, h = (int(v) for v in window)
    _jpeg.crop_resize(data, x, y, w, h, out, int(size), bool(mirror), bool(antialias), bool(dct_scaling))
    return out


def check(data: bytes | memoryview | NDArray[np.uint8]) -> tuple[int, int]:
    """(width, height) of a JPEG whose header is within format.MAX_PIXELS and whose every scan decodes
    without a corrupt-data warning (strict, unlike the decode paths; decoded at 1/8 scale, so it costs
    about the entropy decoding). ValueError naming the fault otherwise. Used by `convert` and `verify --deep`."""
    require()
    return _jpeg.check(data)


def add_restarts(data: bytes | memoryview | NDArray[np.uint8], interval: int | str) -> bytes:
    """The same JPEG losslessly rewritten with restart markers (the DCT coefficients untouched, so the decoded
    pixels are identical), as one interleaved baseline scan with optimized Huffman tables: `interval` MCUs per
    restart interval, rounded to the divisor of the MCUs per row nearest it (so the intervals tile the rows),
    or "rows" for one interval per MCU row. crop_resize and box_resize then entropy-decode only the intervals
    their window covers. APPn and COM markers are kept. ValueError for data libjpeg rejects or warns about."""
    require()
    if interval == "rows":
        want = 0
    elif isinstance(interval, int) and not isinstance(interval, bool) and 1 <= interval <= 65535:
        want = interval
    else:
        raise ValueError(f"interval must be 'rows' or an integer in [1, 65535] (MCUs), got {interval!r}")
    return _jpeg.add_restarts(data, want)


def decode(data: bytes | memoryview | NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The whole image, (height, width, 3) uint8 RGB."""
    require()
    buf, width, height = _jpeg.decode(data)
    return np.frombuffer(buf, np.uint8).reshape(height, width, 3)


def resize(
    image: NDArray[np.uint8],
    size: int,
    *,
    mirror: bool = False,
    antialias: bool = True,
    box: tuple[float, float, float, float] | None = None,
) -> NDArray[np.uint8]:
    """crop_resize's resize alone, on an (h, w, 3) uint8 image in memory; with `box` = (x0, y0, x1, y1)
    in pixels, Pillow's resize(box=...): that part of the image, with neighbours outside it in the taps."""
    require()
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (h, w, 3) uint8, got {image.dtype} {image.shape}")
    image = np.ascontiguousarray(image)
    out = _output(None, size)
    extra = () if box is None else (tuple(float(v) for v in box),)
    _jpeg.resize(image, image.shape[1], image.shape[0], out, int(size), bool(mirror), bool(antialias), *extra)
    return out


def box_resize(
    data: bytes | memoryview | NDArray[np.uint8],
    box: tuple[float, float, float, float],
    size: int,
    *,
    antialias: bool = True,
    dct_scaling: bool = False,
    out: NDArray[np.uint8] | None = None,
) -> NDArray[np.uint8]:
    """Decode what resizing the source box (x0, y0, x1, y1) needs (the box and its filter's reach) and
    resize the box to (size, size, 3) as Pillow's resize(box=...) does. The eval path: with
    `centre_box`, torchvision's Resize(resize_size) + CenterCrop(image_size) on a Pillow image (within 1;
    with `dct_scaling`, a box at least 2x `size` is decoded at a DCT scale first, as in crop_resize)."""
    require()
    out = _output(out, size)
    x0, y0, x1, y1 = (float(v) for v in box)
    _jpeg.box_resize(data, x0, y0, x1, y1, out, int(size), False, bool(antialias), bool(dct_scaling))
    return out


def centre_box_within(
    content: tuple[int, int, int, int], *, image_size: int, resize_size: int
) -> tuple[float, float, float, float]:
    """centre_box of an image's content box (left, top, right, bottom: the part inside uniform borders), in
    the image's own pixels: the eval crop of the content, as if the borders were never there."""
    left, top, right, bottom = (int(v) for v in content)
    x0, y0, x1, y1 = centre_box(right - left, bottom - top, image_size=image_size, resize_size=resize_size)
    return x0 + left, y0 + top, x1 + left, y1 + top


def centre_box(width: int, height: int, *, image_size: int, resize_size: int) -> tuple[float, float, float, float]:
    """The source box that torchvision's Resize(resize_size) + CenterCrop(image_size) keeps, in source
    pixels (fractional): the shorter side resized to resize_size, the longer to int(resize_size *
    longer / shorter), then a centred image_size square at int(round(...)) offsets (Python's
    rounding, as torchvision). image_size > resize_size is refused (torchvision would pad)."""
    if image_size > resize_size:
        raise ValueError(f"image_size={image_size} must be <= resize_size={resize_size}")
    if width <= height:
        new_w, new_h = resize_size, int(resize_size * height / width)
    else:
        new_w, new_h = int(resize_size * width / height), resize_size
    top, left = int(round((new_h - image_size) / 2.0)), int(round((new_w - image_size) / 2.0))
    sx, sy = width / new_w, height / new_h
    return left * sx, top * sy, (left + image_size) * sx, (top + image_size) * sy
