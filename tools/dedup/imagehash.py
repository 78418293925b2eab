"""The Pillow side of the perceptual hash: one fixed recipe from an image to the 32x32 grey array that
kernels.phash.dct_hash hashes, taken inside the image's content box (tools.dedup.borders), so a letterboxed
copy hashes like its original. Conversion, dedup and the dedup benchmarks all use it, so hashes agree."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tagstream.kernels.phash import HASH_SIDE, dct_hash
from tagstream.tools.dedup.borders import Box, content_box


def gray32(img: Image.Image) -> NDArray[np.float32]:
    """Luma, box-filtered down to 32x32 (the box filter averages every pixel: stable under rescaling)."""
    small = img.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)


def phash_image(img: Image.Image) -> int:
    """The pHash of the whole frame."""
    out = np.zeros(1, np.uint64)
    dct_hash(gray32(img)[None], out)
    return int(out[0])


def content_phash(img: Image.Image, box: Box | None = None) -> tuple[Box, int]:
    """(content box, pHash of the content inside it) of an RGB image; `box` given: hash inside that box."""
    if box is None:
        box = content_box(np.asarray(img))
    return box, phash_image(img.crop(box) if box != (0, 0, img.width, img.height) else img)
