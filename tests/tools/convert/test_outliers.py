"""The GPU decoder's size bound holds at conversion: with the default options a 20-megapixel JPEG (the
outliers that make nvJPEG reallocate, and fail, mid-run) is stored at 1024 px on its longer side, well
inside what the GPU pipeline preallocates for (loader/pipeline/graph.py GPU_MAX_PIXELS)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tagstream.loader.pipeline.graph import GPU_MAX_PIXELS
from tagstream.tools.convert.image import Accepted, ImageOptions, validate_image


def test_default_max_side_bounds_a_20_megapixel_jpeg():
    w, h = 5472, 3648  # a 20 MP camera frame
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    pixels = np.stack(np.broadcast_arrays(x, y, (x + y) / 2), -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=80)
    res = validate_image(buf.getvalue(), ImageOptions())
    assert isinstance(res, Accepted), res
    assert res.reencoded == ("oversize",) and (res.width, res.height) == (1024, 683)
    with Image.open(io.BytesIO(res.data)) as stored:
        assert stored.size == (1024, 683)
    assert (
        ImageOptions().max_side ** 2 * 16 <= GPU_MAX_PIXELS
    )  # a 16x margin for datasets converted with a larger --max-side
