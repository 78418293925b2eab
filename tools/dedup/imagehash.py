"""The Pillow side of the perceptual hash: one fixed recipe from an image to the 32x32 grey array that
kernels.phash.dct_hash hashes. Conversion and the dedup benchmark both use it, so hashes agree."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tagstream.kernels.phash import HASH_SIDE, dct_hash


def gray32(img: Image.Image) -> NDArray[np.float32]:
    """Luma, box-filtered down to 32x32 (the box filter averages every pixel: stable under rescaling)."""
    small = img.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)


def phash_image(img: Image.Image) -> int:
    out = np.zeros(1, np.uint64)
    dct_hash(gray32(img)[None], out)
    return int(out[0])
