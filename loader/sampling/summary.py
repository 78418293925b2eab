"""The O(classes + shards) facts every rank needs, from one chunked pass over all images: class counts over
the eligible images, each shard's weight sum and drawable-image count.

Two passes over the labels in chunks of whole shards (counts first: every weight depends on them), so memory
is one chunk, whatever N. Computed once per (vocabulary, sampling, masks, split) and cached
(loader/sampling/cache.py); ranks then read only their own blocks' labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tagstream.kernels.assign import block_weights
from tagstream.loader.sampling.range_weights import RangeWeights

CHUNK_IMAGES = 1 << 22  # images per read; a chunk is whole shards (a larger shard is read alone)


@dataclass(frozen=True)
class SamplingSummary:
    counts: NDArray[np.int64]  # per class: eligible images carrying it
    shard_sums: NDArray[np.float64]  # per shard: total weight (block_weights over the shards)
    shard_drawable: NDArray[np.int64]  # per shard: images with weight > 0

    @property
    def num_drawable(self) -> int:
        return int(self.shard_drawable.sum())


def shard_chunks(shard_starts: NDArray[np.int64], chunk: int = CHUNK_IMAGES) -> list[tuple[int, int]]:
    """Runs (a, b) of consecutive shards a..b-1 holding at most `chunk` images (or one larger shard)."""
    runs, a = [], 0
    n_shards = len(shard_starts) - 1
    while a < n_shards:
        b = a + 1
        while b < n_shards and shard_starts[b + 1] - shard_starts[a] <= chunk:
            b += 1
        runs.append((a, b))
        a = b
    return runs


def compute_summary(
    source: RangeWeights, shard_starts: NDArray[np.int64], num_classes: int, *, chunk: int = CHUNK_IMAGES
) -> SamplingSummary:
    """Counts, then weights chunk by chunk (each shard summed whole, exactly as over all weights at once)."""
    shard_starts = np.asarray(shard_starts, dtype=np.int64)
    runs = shard_chunks(shard_starts, chunk)
    counts = np.zeros(num_classes, dtype=np.int64)
    for a, b in runs:
        source.add_counts(int(shard_starts[a]), int(shard_starts[b]), counts)
    sums = np.zeros(len(shard_starts) - 1)
    drawable = np.zeros(len(shard_starts) - 1, dtype=np.int64)
    for a, b in runs:
        lo, hi = int(shard_starts[a]), int(shard_starts[b])
        w = source.weights(lo, hi, counts)
        local = shard_starts[a : b + 1] - lo
        sums[a:b] = block_weights(local, w)
        positive = np.concatenate([[0], np.cumsum(w > 0)])
        drawable[a:b] = positive[local[1:]] - positive[local[:-1]]
    return SamplingSummary(counts, sums, drawable)
