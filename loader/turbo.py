"""The CPU decode path: decode only a window of a JPEG and resize it in one C call (loader/_jpeg.c,
libjpeg-turbo), run inside the external-source workers. On two cores DALI's CPU decoder and resize
cost twice what this does (docs/loader-bench.md); on GPU the pipeline decodes with nvJPEG instead.

The resize is Pillow's bilinear filter, antialiased when downscaling (torchvision's RandomResizedCrop
on PIL images gives the same pixels within 1). If the extension did not build (no C compiler or no
libjpeg headers at install time), `available()` is False and the loader falls back to DALI's decoder.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

_HOW = "install libjpeg62-turbo-dev (or another libjpeg-turbo's headers) and a C compiler, then reinstall tagstream"
try:
    from . import _jpeg
except ImportError as exc:  # the optional extension was not built
    _jpeg = None
    _MISSING = f"tagstream.loader._jpeg is not built ({exc}); {_HOW}"
else:
    _MISSING = f"tagstream.loader._jpeg is not available; {_HOW}"


def available() -> bool:
    return _jpeg is not None


def require() -> None:
    if _jpeg is None:
        raise RuntimeError(_MISSING)


def crop_resize(
    data: bytes | memoryview | NDArray[np.uint8],
    window: tuple[int, int, int, int],
    size: int,
    *,
    mirror: bool = False,
    antialias: bool = True,
    out: NDArray[np.uint8] | None = None,
) -> NDArray[np.uint8]:
    """Decode the (x, y, w, h) window of a JPEG and resize it to (size, size, 3) uint8 RGB.

    Raises ValueError for data libjpeg rejects (or warns about: truncated or corrupt entropy data) and
    for a window outside the image.
    """
    require()
    if out is None:
        out = np.empty((size, size, 3), np.uint8)
    elif out.shape != (size, size, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {(size, size, 3)}, got {out.dtype} {out.shape}")
    x, y, w, h = (int(v) for v in window)
    _jpeg.crop_resize(data, x, y, w, h, out, int(size), bool(mirror), bool(antialias))
    return out


def decode(data: bytes | memoryview | NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The whole image, (height, width, 3) uint8 RGB."""
    require()
    buf, width, height = _jpeg.decode(data)
    return np.frombuffer(buf, np.uint8).reshape(height, width, 3)


def resize(image: NDArray[np.uint8], size: int, *, mirror: bool = False, antialias: bool = True) -> NDArray[np.uint8]:
    """crop_resize's resize alone, on an (h, w, 3) uint8 image in memory."""
    require()
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (h, w, 3) uint8, got {image.dtype} {image.shape}")
    image = np.ascontiguousarray(image)
    out = np.empty((size, size, 3), np.uint8)
    _jpeg.resize(image, image.shape[1], image.shape[0], out, int(size), bool(mirror), bool(antialias))
    return out


def centre_window(width: int, height: int, *, image_size: int, resize_size: int) -> tuple[int, int, int, int]:
    """The source window that "resize the shorter side to resize_size, then centre-crop image_size"
    keeps: (x, y, w, h), square, centred."""
    side = min(width, height, max(1, round(image_size * min(width, height) / resize_size)))
    return (width - side) // 2, (height - side) // 2, side, side
