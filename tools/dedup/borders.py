"""The content box of an image: what lies inside uniform borders (letterbox or pillarbox bars, a frame of
any flat colour, JPEG-noisy), so a padded copy hashes and embeds like its unpadded original.

A side's border is the run of lines, from that edge inwards, that are flat: at least FLAT_SHARE of their
pixels within TOLERANCE (every channel) of the colour of the side's outermost line (its median pixel).
Each side is measured on its own (bars need not match; padding may be one-sided), and the search repeats
inside the box found (a black bar around a white studio backdrop: both go), up to ROUNDS times.

The trade-off: a photo whose own edge is flat (an overexposed sky, a studio backdrop) loses that strip
too. Its copies lose the same strip, so they still match; a box that would keep MIN_KEEP of a side or
less is not taken (a flat or nearly flat image keeps its whole frame).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

TOLERANCE = 24  # per channel, out of 255: JPEG ringing inside a bar next to a hard edge stays within it at q >= 75
FLAT_SHARE = 0.97  # of a line's pixels: a logo or a few noisy pixels on a bar do not end it
MIN_KEEP = 0.2  # of each side: less is not a border but a flat image
ROUNDS = 3

Box = tuple[int, int, int, int]  # (left, top, right, bottom), right and bottom exclusive, in stored pixels


def _flat_run(lines: NDArray[np.uint8], limit: int) -> int:
    """How many of `lines` (axis 0, outermost first; each line (L, C)) are flat in the outermost line's
    colour, at most `limit`. Looks at 8, 16, 32, ... lines at a time: a photo costs one line per side."""
    colour = np.median(lines[0], axis=0).astype(np.int16)
    run, chunk = 0, 1
    while run < limit:
        block = lines[run : min(limit, run + chunk)].astype(np.int16)
        near = (np.abs(block - colour).max(axis=-1) <= TOLERANCE).mean(axis=-1) >= FLAT_SHARE
        if near.all():
            run += block.shape[0]
            chunk *= 2
            continue
        return run + int(np.argmin(near))
    return run


def content_box(rgb: NDArray[np.uint8]) -> Box:
    """The box inside the uniform borders of an (H, W, C) uint8 image; the whole frame when it has none."""
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    height, width = rgb.shape[:2]
    left, top, right, bottom = 0, 0, width, height
    for _ in range(ROUNDS):
        inner = rgb[top:bottom, left:right]
        h, w = inner.shape[:2]
        cols = inner.transpose(1, 0, 2)
        cut_h, cut_w = h - max(1, int(np.ceil(MIN_KEEP * height))), w - max(1, int(np.ceil(MIN_KEEP * width)))
        if cut_h < 0 or cut_w < 0:
            break
        t = _flat_run(inner, cut_h)
        b = _flat_run(inner[::-1], cut_h - t)
        l_ = _flat_run(cols, cut_w)
        r = _flat_run(cols[::-1], cut_w - l_)
        if t == b == l_ == r == 0 or t + b >= cut_h or l_ + r >= cut_w:
            break  # no border left, or flat until the limit: an image, not a border
        left, top, right, bottom = left + l_, top + t, right - r, bottom - b
    return left, top, right, bottom


def is_whole(box: Box, width: int, height: int) -> bool:
    return tuple(box) == (0, 0, width, height)
