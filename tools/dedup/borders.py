"""The content box of an image: what lies inside uniform padding (letterbox or pillarbox bars, a frame of any
flat colour, JPEG-noisy), so a padded copy hashes and embeds like its unpadded original.

A side's run is the lines, from that edge inwards, that are flat: at least FLAT_SHARE of their pixels within
TOLERANCE (every channel) of the colour of the side's outermost line (its median pixel). Padding comes in
opposite pairs — a downloader centres the image (img2dataset's border mode, letterboxed video frames) — so a
pair of opposite runs is cut only when both are there, of one colour, and of about one length (within
SYMMETRY of the side, or 2 px). The search repeats inside the box found (a black frame around a white mat:
both go), up to ROUNDS times.

Why pairs: a flat strip on one side only is the photo's own (a sky, a wall, a studio backdrop), and cutting
it made a crop of the photo, which keeps less of the strip, hash over a different region than its original
(the rehearsal's planted crops: 6 of 10 found, 20 false pairs). A box that would keep MIN_KEEP of a side or
less is not taken (a flat or nearly flat image keeps its whole frame).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

TOLERANCE = 24  # per channel, out of 255: JPEG ringing inside a bar next to a hard edge stays within it at q >= 75
FLAT_SHARE = 0.97  # of a line's pixels: a logo or a few noisy pixels on a bar do not end it
MIN_KEEP = 0.2  # of each side: less is not a border but a flat image
SYMMETRY = 0.03  # of a side: how far apart two opposite bars of centred padding may be (rounding, JPEG blocks)
ROUNDS = 3

Box = tuple[int, int, int, int]  # (left, top, right, bottom), right and bottom exclusive, in stored pixels


def _colour(lines: NDArray[np.uint8]) -> NDArray[np.int16]:
    return np.median(lines[0], axis=0).astype(np.int16)


def _flat_run(lines: NDArray[np.uint8], limit: int) -> int:
    """How many of `lines` (axis 0, outermost first; each line (L, C)) are flat in the outermost line's
    colour, at most `limit`. Looks at 8, 16, 32, ... lines at a time: a photo costs one line per side."""
    colour = _colour(lines)
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


def _pair(lines: NDArray[np.uint8], limit: int) -> tuple[int, int]:
    """The runs of padding at both ends of `lines` (axis 0), as (first end, last end); (0, 0) unless both ends
    have one, of one colour, of about one length."""
    first = _flat_run(lines, limit)
    last = _flat_run(lines[::-1], limit - first)
    side = lines.shape[0]
    if not first or not last or abs(first - last) > max(2, SYMMETRY * side):
        return 0, 0
    if np.abs(_colour(lines) - _colour(lines[::-1])).max() > TOLERANCE:
        return 0, 0
    return first, last


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
        t, b = _pair(inner, cut_h)
        l_, r = _pair(cols, cut_w)
        if t == b == l_ == r == 0 or t + b >= cut_h or l_ + r >= cut_w:
            break  # no border left, or flat until the limit: an image, not a border
        left, top, right, bottom = left + l_, top + t, right - r, bottom - b
    return left, top, right, bottom


def is_whole(box: Box, width: int, height: int) -> bool:
    return tuple(box) == (0, 0, width, height)
