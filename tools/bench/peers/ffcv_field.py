"""FFCV's RGB image field storing a JPEG's own bytes: its writer would decode and re-encode every image (OpenCV,
its own quality), and the peers must read the bytes every other contender reads. Reading is FFCV's unchanged
(mode 0: a JPEG its decoders decode)."""

from __future__ import annotations

import numpy as np
from ffcv.fields import RGBImageField
from ffcv.fields.rgb_image import IMAGE_MODES


class JpegBytesField(RGBImageField):
    """Encodes (jpeg bytes, width, height) as they are."""

    def encode(self, destination, item, malloc):
        data, width, height = item
        destination["mode"] = IMAGE_MODES["jpg"]
        destination["height"], destination["width"] = height, width
        destination["data_ptr"], storage = malloc(len(data))
        storage[:] = np.frombuffer(data, np.uint8)
