"""The GPU path's record reads, a batch at a time: a JPEG's frame size from its markers, and the images of
a batch of records as views (loader/data/_records.c; the same in Python where the extension did not build).

`images` is what ShardStore.image_buffers runs per batch: for each sample, its key looked up in its
shard's read transaction (py-lmdb's get, so LMDB's own checks run), the image found inside the record as
format.pack_record lays it out, checked to be a JPEG whose frame header says the index's size (DALI's
decoders and nvJPEG size their output from the header: a forged 65500 x 65500 header on 2 KB would
allocate gigabytes), and handed on as a view of LMDB's memory map, wrapped by the caller (DALI's
TensorCPU). One C call a batch (its cost a sample, most of it DALI's wrapping: docs/costs.md); the first
sample that is not as expected stops the call and is named by the caller.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data import format as fmt

try:
    from tagstream.loader.data import _records
except ImportError:  # the optional extension did not build (no C compiler at install time): Python below
    _records = None

# why `images` stopped at a sample (the codes of loader/data/_records.c)
NO_KEY, OTHER_LAYOUT, NOT_JPEG, FRAME_DIFFERS = 1, 2, 3, 4


def frame_size(data: bytes | memoryview | NDArray[np.uint8]) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header, read from its markers (nothing decoded); ValueError if none."""
    if _records is not None:
        return _records.frame_size(data)
    d = memoryview(data).cast("B")
    i, n = 2, len(d)
    while n >= 4 and d[0] == 0xFF and d[1] == 0xD8 and i + 4 <= n and d[i] == 0xFF:
        m = d[i + 1]
        if m == 0xFF or m in (0xD8, 0x01) or 0xD0 <= m <= 0xD7:
            i += 1 if m == 0xFF else 2
        elif m in (0xD9, 0xDA):
            break
        elif 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                break
            return (d[i + 7] << 8) | d[i + 8], (d[i + 5] << 8) | d[i + 6]
        else:
            i += 2 + ((d[i + 2] << 8) | d[i + 3])
    raise ValueError("JPEG has no frame header before its first scan")


def _frame_is(data: Any, width: int, height: int) -> bool:
    try:
        return frame_size(data) == (width, height)
    except ValueError:
        return False


def first_size_mismatch(buffers: list, widths: NDArray[np.int64], heights: NDArray[np.int64]) -> int:
    """The first k whose JPEG frame is not widths[k] x heights[k], or -1: the decoders that size their
    output from the header (DALI's, nvJPEG) are then bounded by the index, which is checked at open
    (format.check_image_sizes). One C call a batch."""
    widths = np.ascontiguousarray(widths, dtype=np.int64)
    heights = np.ascontiguousarray(heights, dtype=np.int64)
    if _records is not None:
        return _records.first_size_mismatch(buffers, widths, heights)
    for k, data in enumerate(buffers):
        if not _frame_is(data, int(widths[k]), int(heights[k])):
            return k
    return -1


def images(
    gets: list[Callable[[bytes], Any]],
    slots: NDArray[np.int64],
    local: NDArray[np.int64],
    widths: NDArray[np.int64],
    heights: NDArray[np.int64],
    wrap: Callable[[memoryview], Any] | None,
) -> tuple[list | None, int, int]:
    """(items, -1, 0): sample i is key local[i] read with gets[slots[i]], its image as a view (of the
    value get returned: LMDB's map when the transaction has buffers=True), wrapped by `wrap` unless None;
    or (None, k, why) for the first sample k that is not as expected (why: NO_KEY, OTHER_LAYOUT, NOT_JPEG,
    FRAME_DIFFERS). Errors raised by get or wrap propagate."""
    arrays = [np.ascontiguousarray(a, dtype=np.int64) for a in (slots, local, widths, heights)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
        raise ValueError("slots, local, widths and heights must be int64 arrays of one entry a sample")
    if _records is not None:
        return _records.images(gets, *arrays, wrap)
    slots, local, widths, heights = (a.tolist() for a in arrays)
    keys = arrays[1].astype(">u8").tobytes()
    out = []
    for i, slot in enumerate(slots):
        value = gets[slot](keys[8 * i : 8 * i + 8])
        if value is None:
            return None, i, NO_KEY
        span = fmt.image_span(value)
        if span is None:
            return None, i, OTHER_LAYOUT
        image = memoryview(value)[span[0] : span[0] + span[1]]
        if len(image) < 2 or image[0] != 0xFF or image[1] != 0xD8:
            return None, i, NOT_JPEG
        if not _frame_is(image, widths[i], heights[i]):
            return None, i, FRAME_DIFFERS
        out.append(image if wrap is None else wrap(image))
    return out, -1, 0
