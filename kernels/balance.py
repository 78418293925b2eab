"""A packing evened to whole images, for one-pass epochs: every partition holds q or q + 1 drawable images.

The packing of kernels/assign.py balances weight to about one image, which is all a law over draws needs.
An epoch that visits every image exactly once needs more: partition p gives `share` images to every global
batch, so if one partition held a single image more than another, that image would be left out of the epoch,
or the other partition would repeat one. So the tails of over-full partitions' blocks move, cut at exact image
counts, to under-full ones: a few more pieces, each within one shard, and the counts equal to one image.
"""

from __future__ import annotations

import numpy as np

from tagstream.kernels.assign import Packing, WeightsOf


def balance_counts(packing: Packing, partitions: int, weights_of: WeightsOf) -> Packing:
    """The packing with block tails moved so that each partition holds exactly q or q + 1 images of positive
    weight, where N = q * partitions + r: the r partitions that hold the most get q + 1 (ties to the lower number).

    The packing's block weights must count images (natural sampling: w = 1 for a drawable image, 0 otherwise).
    Donors in partition order give the tails of their highest-placed blocks, each cut just before its m-th
    drawable image from the end, to receivers in partition order; weights_of(lo, hi) (the weights of images
    [lo, hi), within one shard) is asked only for the blocks cut. Deterministic: every rank computes the same.
    """
    counts = np.asarray(packing.block_weights, dtype=np.float64)
    owner = np.asarray(packing.owner, dtype=np.int64)
    whole = np.rint(counts)
    if partitions < 1 or counts.shape != owner.shape or not np.array_equal(whole, counts) or (whole < 0).any():
        raise ValueError(
            f"balance_counts needs partitions >= 1 (got {partitions}) and one whole image count >= 0 per block "
            "(natural sampling's weights)"
        )
    if owner.size and (owner.min() < 0 or owner.max() >= partitions):
        raise ValueError(f"block owners must be in [0, {partitions})")
    blocks = [
        [int(lo), int(hi), int(p), int(c)]
        for lo, hi, p, c in zip(packing.block_starts[:-1], packing.block_starts[1:], owner, whole)
    ]
    loads = np.bincount(owner, weights=whole, minlength=partitions).astype(np.int64)
    q, r = divmod(int(loads.sum()), partitions)
    target = np.full(partitions, q, dtype=np.int64)
    target[np.argsort(-loads, kind="stable")[:r]] += 1
    need = target - loads  # > 0: receives; < 0: gives
    receivers = [int(p) for p in np.flatnonzero(need > 0)]
    ri = 0
    for donor in np.flatnonzero(need < 0):
        queue = [b for b in range(len(blocks) - 1, -1, -1) if blocks[b][2] == donor]  # highest-placed first
        while need[donor] < 0:
            b = queue[0]
            lo, hi, _, count = blocks[b]
            if count == 0:
                queue.pop(0)
                continue
            to = receivers[ri]
            m = int(min(-need[donor], need[to], count))
            drawable = np.flatnonzero(np.asarray(weights_of(lo, hi)) > 0)
            if drawable.shape[0] != count:
                raise ValueError(f"weights_of({lo}, {hi}) has {drawable.shape[0]} drawable images, the packing {count}")
            cut = lo + int(drawable[-m])
            blocks[b][1], blocks[b][3] = cut, count - m
            blocks.append([cut, hi, to, m])
            need[donor] += m
            need[to] -= m
            if need[to] == 0:
                ri += 1
    blocks = sorted((blk for blk in blocks if blk[1] > blk[0]), key=lambda blk: blk[0])
    n = int(packing.block_starts[-1])
    starts = np.array([blk[0] for blk in blocks] + [n], dtype=np.int64)
    new_owner = np.array([blk[2] for blk in blocks], dtype=np.int64)
    block_counts = np.array([blk[3] for blk in blocks], dtype=np.float64)
    mean = float(target.sum()) / partitions
    imbalance = float(target.max()) / mean - 1.0 if mean > 0 else 0.0
    return Packing(starts, new_owner, imbalance, packing.imbalance_whole_shards, block_counts)
