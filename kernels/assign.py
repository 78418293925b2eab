"""Shards to partitions, balancing total weight: greedy LPT bin packing, a move/swap refinement, then cuts.

A partition is the unit of the sample stream (loader/sampling/partitions.py): the count P is fixed when a run
starts, and a rank serves one or more partitions. Whole shards keep each partition's reads local, but whole
shards cannot balance well (1,000 equal shards over 64 partitions leave some partitions 16 shards and some 15:
2.4% apart), and not at all with fewer shards than partitions. So after packing whole shards, each over-full
partition hands the tail of one of its shards, cut at a weight quantile, to an under-full partition: at most
partitions - 1 cuts, every partition reads its whole shards plus a few contiguous pieces, and the imbalance
falls to about one image's weight.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Callable

import numba
import numpy as np
from numpy.typing import NDArray


def block_weights(block_starts: NDArray[np.int64], weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Total weight per block (empty blocks 0). Each block is one reduction over its own images, so a block
    sums the same from a slice of the weights as from all of them."""
    block_starts = np.asarray(block_starts, dtype=np.int64)
    bw = np.zeros(len(block_starts) - 1)
    full = np.diff(block_starts) > 0  # reduceat over the non-empty blocks only: each runs to the next one's start
    if full.any():
        bw[full] = np.add.reduceat(weights, block_starts[:-1][full])
    return bw


@numba.njit(cache=True)
def _lpt_kernel(order, block_weights, loads, owner) -> None:
    partitions = loads.shape[0]
    loads[:] = 0.0
    for t in range(order.shape[0]):
        b = order[t]
        r = 0
        for q in range(1, partitions):
            if loads[q] < loads[r]:
                r = q
        owner[b] = r
        loads[r] += block_weights[b]


@numba.njit(cache=True)
def _refine_kernel(block_weights, owner, loads, max_rounds) -> int:
    """Improve an assignment: while some move of a block off the heaviest partition, or swap of a block of it
    with a lighter block elsewhere, lowers the heaviest partition's load without raising the other partition
    to that level, apply the best such change. Each step lowers the sorted load vector, so it ends.
    Returns the number of changes made."""
    n = block_weights.shape[0]
    partitions = loads.shape[0]
    for rounds in range(max_rounds):
        a = 0
        for q in range(1, partitions):
            if loads[q] > loads[a]:
                a = q
        la = loads[a]
        best_gain = 1e-12 * la
        best_x = -1
        best_y = -1
        best_b = -1
        for x in range(n):
            if owner[x] != a:
                continue
            wx = block_weights[x]
            for b in range(partitions):  # move x to b
                if b != a and 0.0 < wx < la - loads[b]:
                    gain = la - max(la - wx, loads[b] + wx)
                    if gain > best_gain:
                        best_gain, best_x, best_y, best_b = gain, x, -1, b
            for y in range(n):  # swap x with y of another partition
                b = owner[y]
                if b == a:
                    continue
                d = wx - block_weights[y]
                if 0.0 < d < la - loads[b]:
                    gain = la - max(la - d, loads[b] + d)
                    if gain > best_gain:
                        best_gain, best_x, best_y, best_b = gain, x, y, b
        if best_x < 0:
            return rounds
        d = block_weights[best_x] - (block_weights[best_y] if best_y >= 0 else 0.0)
        owner[best_x] = best_b
        if best_y >= 0:
            owner[best_y] = a
        loads[a] -= d
        loads[best_b] += d
    return max_rounds


REFINE_WORK = 20_000_000  # candidate checks allowed in the refinement (each round costs ~n_blocks^2 / partitions)


def _refine_rounds(n_blocks: int, partitions: int) -> int:
    """Rounds of refinement: up to 4 per block, within REFINE_WORK checks (none when a single round
    exceeds it: with many blocks per partition LPT is already close, and cutting does the rest)."""
    per_round = max(1, n_blocks * n_blocks // partitions)
    return int(min(4 * n_blocks + 16, REFINE_WORK // per_round))


def _lpt_order(block_weights: NDArray[np.float64]) -> NDArray[np.int64]:
    """Heaviest first; ties by block number (stable), so the assignment is deterministic."""
    return np.argsort(-block_weights, kind="stable").astype(np.int64)


def _imbalance(loads: NDArray[np.float64]) -> float:
    mean = float(loads.mean()) if loads.size else 0.0
    return float(loads.max() / mean - 1.0) if mean > 0 else 0.0


def assign_blocks(
    block_weights: NDArray[np.float64], partitions: int, *, refine: bool = True
) -> tuple[NDArray[np.int64], float]:
    """Greedy LPT: blocks by decreasing weight, each to the currently lightest partition (lowest number on ties),
    then (refine=True) moves and swaps off the heaviest partition while they lower it (see _refine_kernel).

    Returns (owner int64[n_blocks]: the partition of each block, imbalance = max partition weight / mean - 1).
    """
    block_weights = np.asarray(block_weights, dtype=np.float64)
    if partitions < 1:
        raise ValueError(f"partitions={partitions} must be >= 1")
    if block_weights.ndim != 1 or (
        block_weights.size and not (np.all(np.isfinite(block_weights)) and block_weights.min() >= 0)
    ):
        raise ValueError("block_weights must be a 1-D array of finite values >= 0")
    owner = np.empty(block_weights.shape[0], dtype=np.int64)
    loads = np.zeros(partitions, dtype=np.float64)
    _lpt_kernel(_lpt_order(block_weights), block_weights, loads, owner)
    if refine:
        _refine_kernel(block_weights, owner, loads, _refine_rounds(block_weights.shape[0], partitions))
        loads = partition_loads(block_weights, owner, partitions)  # re-summed, free of incremental rounding
    return owner, _imbalance(loads)


def partition_loads(
    block_weights: NDArray[np.float64], owner: NDArray[np.int64], partitions: int
) -> NDArray[np.float64]:
    """Total weight held by each partition."""
    return np.bincount(owner, weights=block_weights, minlength=partitions).astype(np.float64)


def assign_blocks_ref(
    block_weights: NDArray[np.float64], partitions: int, *, refine: bool = True
) -> tuple[NDArray[np.int64], float]:
    """Twin of assign_blocks: LPT with a heap of (load, partition); refinement written with NumPy gains."""
    block_weights = np.asarray(block_weights, dtype=np.float64)
    heap = [(0.0, r) for r in range(partitions)]
    owner = np.empty(block_weights.shape[0], dtype=np.int64)
    for b in _lpt_order(block_weights):
        load, r = heapq.heappop(heap)
        owner[b] = r
        heapq.heappush(heap, (load + float(block_weights[b]), r))
    loads = np.zeros(partitions)
    for load, r in heap:
        loads[r] = load
    if refine:
        _refine_ref(block_weights, owner, loads, _refine_rounds(block_weights.shape[0], partitions))
        loads = partition_loads(block_weights, owner, partitions)
    return owner, _imbalance(loads)


def _refine_ref(block_weights, owner, loads, max_rounds) -> None:
    """Twin of _refine_kernel: the same candidates, gains computed as arrays, first best in scan order."""
    partitions = loads.shape[0]
    for _ in range(max_rounds):
        a = int(np.argmax(loads))
        la = loads[a]
        xs = np.flatnonzero(owner == a)
        best = (1e-12 * la, -1, -1, -1)
        for x in xs:
            wx = block_weights[x]
            cand = []
            ok = (np.arange(partitions) != a) & (0.0 < wx) & (wx < la - loads)
            gains = la - np.maximum(la - wx, loads + wx)
            cand += [(gains[b], x, -1, b) for b in np.flatnonzero(ok)]
            ys = np.flatnonzero(owner != a)
            d = wx - block_weights[ys]
            ok = (0.0 < d) & (d < la - loads[owner[ys]])
            gains = la - np.maximum(la - d, loads[owner[ys]] + d)
            cand += [(gains[t], x, ys[t], owner[ys[t]]) for t in np.flatnonzero(ok)]
            for c in cand:
                if c[0] > best[0]:
                    best = c
        _, x, y, b = best
        if x < 0:
            return
        d = block_weights[x] - (block_weights[y] if y >= 0 else 0.0)
        owner[x] = b
        if y >= 0:
            owner[y] = a
        loads[a] -= d
        loads[b] += d


WeightsOf = Callable[[int, int], NDArray[np.float64]]  # (lo, hi) of one shard -> weights of images lo..hi-1

CUT_CHUNK = 1 << 16  # images summed per step while scanning a shard's tail for a cut point


@dataclass(frozen=True)
class Packing:
    """Blocks (contiguous image ranges, never straddling a shard) and their owning partitions."""

    block_starts: NDArray[np.int64]  # n_blocks + 1 global image boundaries, from 0 to N
    owner: NDArray[np.int64]  # partition of each block
    imbalance: float  # max partition weight / mean - 1, after the cuts
    imbalance_whole_shards: float  # the same for whole shards only (LPT + refinement)
    block_weights: NDArray[np.float64]  # total weight of each block


def _tail_cut(weights: NDArray[np.float64], lo: int, hi: int, amount: float) -> tuple[int, float]:
    """(t, weight of [t, hi)) for the tail of [lo, hi) whose weight is closest to amount.

    Scans back from hi in chunks, so the cost is the size of the tail, not of the shard."""
    acc, end = 0.0, hi
    while end > lo:
        start = max(lo, end - CUT_CHUNK)
        rev = acc + np.cumsum(weights[start:end][::-1])  # rev[k] = weight of [end - 1 - k, hi)
        if rev[-1] >= amount:
            k = int(np.searchsorted(rev, amount))
            shorter = float(rev[k - 1]) if k > 0 else acc
            if amount - shorter < float(rev[k]) - amount:
                return end - k, shorter
            return end - 1 - k, float(rev[k])
        acc, end = float(rev[-1]), start
    return lo, acc


def _cut_tails(
    weights_of: WeightsOf, loads: NDArray[np.float64], blocks: list[list[int]], by_partition: list[list[int]]
) -> None:
    """Move weight from over-full to under-full partitions by cutting block tails; edits blocks (appends pieces).

    Surpluses (over-full partitions in order) and deficits (under-full partitions in order) are laid
    end to end on one axis; a donor's k-th cut aims at the cumulative target where the next deficit
    or its own surplus ends, measured from what it has actually given so far. Rounding to whole
    images therefore never accumulates: each partition ends within about one image of the mean. A cut
    that would leave the receiver heavier than the donor is skipped, so the maximum never rises (which
    matters only when images are heavy next to a partition's share, e.g. fewer images than partitions).
    """
    partitions = loads.shape[0]
    mean = float(loads.sum()) / partitions
    eps = 1e-12 * mean
    surplus = [(d, loads[d] - mean) for d in range(partitions) if loads[d] > mean + eps]
    receivers = [r for r in range(partitions) if loads[r] < mean - eps]
    deficit_ends = np.cumsum([mean - loads[r] for r in receivers])
    ri, start = 0, 0.0  # start: axis position where the current donor's surplus begins
    for d, amount_d in surplus:
        end = start + amount_d
        given = 0.0
        queue = list(by_partition[d])
        while ri < len(receivers) and queue:
            seg_end = min(end, float(deficit_ends[ri]))
            want = (seg_end - start) - given
            while want > 0 and queue:
                b = queue[0]
                lo, hi = blocks[b][0], blocks[b][1]
                t, w_tail = _tail_cut(weights_of(lo, hi), 0, hi - lo, want)
                t += lo
                if t < hi and loads[receivers[ri]] + w_tail > loads[d]:
                    break  # the receiver would end heavier than the donor is: never raise the maximum
                if t < hi:
                    blocks[b][1] = t
                    blocks.append([t, hi, receivers[ri]])
                    given += w_tail
                    loads[d] -= w_tail
                    loads[receivers[ri]] += w_tail
                if t > lo:  # the block still has images: the closest cut has been made
                    break
                queue.pop(0)
                want = (seg_end - start) - given
            if deficit_ends[ri] <= end:
                ri += 1
            if seg_end >= end:
                break
        start = end


def pack_shards(
    shard_starts: NDArray[np.int64], weights: NDArray[np.float64], partitions: int, *, cut: bool = True
) -> Packing:
    """Assign shards to partitions by weight (assign_blocks), then (cut=True) balance by cutting shard tails.

    See _cut_tails for the cutting. Empty blocks are dropped. Deterministic. The same as pack_shard_sums
    given every shard's weight sum and the per-image weights.
    """
    shard_starts = np.asarray(shard_starts, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    _check_shard_starts(shard_starts)
    if int(shard_starts[-1]) != weights.shape[0]:
        raise ValueError(f"shard_starts end at {int(shard_starts[-1])} but there are {weights.shape[0]} weights")
    return pack_shard_sums(
        shard_starts, block_weights(shard_starts, weights), partitions, lambda lo, hi: weights[lo:hi], cut=cut
    )


def pack_shard_sums(
    shard_starts: NDArray[np.int64],
    shard_sums: NDArray[np.float64],
    partitions: int,
    weights_of: WeightsOf,
    *,
    cut: bool = True,
) -> Packing:
    """pack_shards from each shard's weight sum (block_weights(shard_starts, w)) and weights_of(lo, hi), the
    weights of the images [lo, hi) of one shard, asked for only for the shards whose tails are cut (at most
    partitions - 1 of them): so nobody needs all N weights at once. Bit-identical to pack_shards on the same weights.
    """
    shard_starts = np.asarray(shard_starts, dtype=np.int64)
    shard_sums = np.asarray(shard_sums, dtype=np.float64)
    if partitions < 1:
        raise ValueError(f"partitions={partitions} must be >= 1")
    _check_shard_starts(shard_starts)
    if shard_sums.shape != (shard_starts.shape[0] - 1,):
        raise ValueError(f"{shard_sums.shape[0]} shard sums for {shard_starts.shape[0] - 1} shards")
    owner, whole = assign_blocks(shard_sums, partitions)
    n = int(shard_starts[-1])
    if not cut or n == 0:
        return Packing(shard_starts, owner, whole, whole, shard_sums)
    loads = partition_loads(shard_sums, owner, partitions)
    blocks = [[int(shard_starts[b]), int(shard_starts[b + 1]), int(owner[b])] for b in range(len(owner))]
    by_partition: list[list[int]] = [[] for _ in range(partitions)]
    for b in range(len(owner) - 1, -1, -1):  # each partition's blocks, highest-placed first
        by_partition[int(owner[b])].append(b)
    last = _LastShard(weights_of, shard_starts)
    _cut_tails(last, loads, blocks, by_partition)
    blocks = sorted((blk for blk in blocks if blk[1] > blk[0]), key=lambda blk: blk[0])
    starts = np.array([blk[0] for blk in blocks] + [n], dtype=np.int64)
    new_owner = np.array([blk[2] for blk in blocks], dtype=np.int64)
    sums = np.array([_block_sum(shard_starts, shard_sums, last, lo, hi) for lo, hi in zip(starts[:-1], starts[1:])])
    return Packing(starts, new_owner, _imbalance(partition_loads(sums, new_owner, partitions)), whole, sums)


def _check_shard_starts(shard_starts: NDArray[np.int64]) -> None:
    if shard_starts.ndim != 1 or shard_starts.shape[0] < 2 or shard_starts[0] != 0 or np.any(np.diff(shard_starts) < 0):
        raise ValueError("shard_starts must be non-decreasing, start at 0, and have at least 2 entries")


class _LastShard:
    """weights_of with the weights of the last shard asked for kept: a shard is cut from its end, often more
    than once, so it is fetched once; only one shard's weights are held at a time."""

    def __init__(self, weights_of: WeightsOf, shard_starts: NDArray[np.int64]):
        self.weights_of, self.starts = weights_of, shard_starts
        self.span, self.weights = (0, 0), np.zeros(0)

    def __call__(self, lo: int, hi: int) -> NDArray[np.float64]:
        if hi == lo:
            return np.zeros(0)
        if not self.span[0] <= lo < hi <= self.span[1]:
            k = int(np.searchsorted(self.starts, lo, side="right")) - 1
            self.span = (int(self.starts[k]), int(self.starts[k + 1]))
            self.weights = np.asarray(self.weights_of(*self.span), dtype=np.float64)
            if self.weights.shape != (self.span[1] - self.span[0],):
                raise ValueError(f"weights_of{self.span} returned shape {self.weights.shape}")
        return self.weights[lo - self.span[0] : hi - self.span[0]]


def _block_sum(
    shard_starts: NDArray[np.int64], shard_sums: NDArray[np.float64], last: _LastShard, lo: int, hi: int
) -> float:
    """Weight of the block [lo, hi): its shard's sum when it is a whole shard, else summed as block_weights sums it."""
    k = int(np.searchsorted(shard_starts, lo, side="right")) - 1
    if lo == shard_starts[k] and hi == shard_starts[k + 1]:
        return float(shard_sums[k])
    return float(block_weights(np.array([0, hi - lo]), last(lo, hi))[0])
