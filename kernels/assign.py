"""Blocks (contiguous image ranges) and their assignment to ranks by greedy LPT bin packing on weight.

Shards are the natural blocks (reads stay local to a rank's shards); a shard heavier than
1/(pieces_per_rank·world) of the total is split at weight quantiles into contiguous sub-ranges, so
there are enough blocks to balance even with fewer shards than ranks. LPT (heaviest block to the
lightest rank), then a refinement pass of single moves and pairwise swaps off the heaviest rank,
leaves an imbalance below the heaviest block's share, typically far below.
"""

from __future__ import annotations

import heapq

import numba
import numpy as np
from numpy.typing import NDArray


def split_blocks(
    shard_starts: NDArray[np.int64], weights: NDArray[np.float64], world: int, *, pieces_per_rank: int = 8
) -> NDArray[np.int64]:
    """Block boundaries (int64, n_blocks+1, global image indices) refining the shard boundaries.

    A shard whose weight exceeds total / (pieces_per_rank * world) is cut into ceil(weight / cap)
    contiguous pieces at its weight quantiles. Empty shards give empty blocks (kept, weight 0).
    """
    shard_starts = np.asarray(shard_starts, dtype=np.int64)
    if world < 1 or pieces_per_rank < 1:
        raise ValueError(f"world={world} and pieces_per_rank={pieces_per_rank} must be >= 1")
    if shard_starts.ndim != 1 or shard_starts.shape[0] < 2 or shard_starts[0] != 0 or np.any(np.diff(shard_starts) < 0):
        raise ValueError("shard_starts must be non-decreasing, start at 0, and have at least 2 entries")
    if int(shard_starts[-1]) != weights.shape[0]:
        raise ValueError(f"shard_starts end at {int(shard_starts[-1])} but there are {weights.shape[0]} weights")
    shard_w = np.add.reduceat(weights, shard_starts[:-1]) if weights.shape[0] else np.zeros(len(shard_starts) - 1)
    shard_w[np.diff(shard_starts) == 0] = 0.0  # reduceat returns the next element for an empty range
    total = float(shard_w.sum())
    if total <= 0:
        return shard_starts.copy()
    cap = total / (pieces_per_rank * world)
    bounds = [shard_starts[:1]]
    for s in range(len(shard_w)):
        lo, hi = int(shard_starts[s]), int(shard_starts[s + 1])
        pieces = int(np.ceil(shard_w[s] / cap)) if shard_w[s] > cap else 1
        if pieces > 1:
            cum = np.cumsum(weights[lo:hi])
            cuts = lo + 1 + np.searchsorted(cum, cum[-1] * np.arange(1, pieces) / pieces, side="left")
            cuts = np.unique(np.clip(cuts, lo + 1, hi - 1)) if hi - lo > 1 else np.zeros(0, np.int64)
            bounds.append(cuts.astype(np.int64))
        bounds.append(np.array([hi], dtype=np.int64))
    return np.concatenate(bounds)


def block_weights(block_starts: NDArray[np.int64], weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Total weight per block (empty blocks 0)."""
    if weights.shape[0] == 0:
        return np.zeros(len(block_starts) - 1)
    bw = np.add.reduceat(weights, np.minimum(block_starts[:-1], weights.shape[0] - 1))
    bw[np.diff(block_starts) == 0] = 0.0
    return bw


@numba.njit(cache=True)
def _lpt_kernel(order, block_weights, loads, owner) -> None:
    world = loads.shape[0]
    loads[:] = 0.0
    for t in range(order.shape[0]):
        b = order[t]
        r = 0
        for q in range(1, world):
            if loads[q] < loads[r]:
                r = q
        owner[b] = r
        loads[r] += block_weights[b]


@numba.njit(cache=True)
def _refine_kernel(block_weights, owner, loads, max_rounds) -> int:
    """Improve an assignment: while some move of a block off the heaviest rank, or swap of a block of it
    with a lighter block elsewhere, lowers the heaviest rank's load without raising the other rank to
    that level, apply the best such change. Each step lowers the sorted load vector, so it ends.
    Returns the number of changes made."""
    n = block_weights.shape[0]
    world = loads.shape[0]
    for rounds in range(max_rounds):
        a = 0
        for q in range(1, world):
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
            for b in range(world):  # move x to b
                if b != a and 0.0 < wx < la - loads[b]:
                    gain = la - max(la - wx, loads[b] + wx)
                    if gain > best_gain:
                        best_gain, best_x, best_y, best_b = gain, x, -1, b
            for y in range(n):  # swap x with y of another rank
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


def _lpt_order(block_weights: NDArray[np.float64]) -> NDArray[np.int64]:
    """Heaviest first; ties by block number (stable), so the assignment is deterministic."""
    return np.argsort(-block_weights, kind="stable").astype(np.int64)


def _imbalance(loads: NDArray[np.float64]) -> float:
    mean = float(loads.mean()) if loads.size else 0.0
    return float(loads.max() / mean - 1.0) if mean > 0 else 0.0


def assign_blocks(block_weights: NDArray[np.float64], world: int, *, refine: bool = True) -> tuple[NDArray[np.int64], float]:
    """Greedy LPT: blocks by decreasing weight, each to the currently lightest rank (lowest rank on ties),
    then (refine=True) moves and swaps off the heaviest rank while they lower it (see _refine_kernel).

    Returns (owner int64[n_blocks], imbalance = max rank weight / mean rank weight - 1).
    """
    block_weights = np.asarray(block_weights, dtype=np.float64)
    if world < 1:
        raise ValueError(f"world={world} must be >= 1")
    if block_weights.ndim != 1 or (block_weights.size and not (np.all(np.isfinite(block_weights)) and block_weights.min() >= 0)):
        raise ValueError("block_weights must be a 1-D array of finite values >= 0")
    owner = np.empty(block_weights.shape[0], dtype=np.int64)
    loads = np.zeros(world, dtype=np.float64)
    _lpt_kernel(_lpt_order(block_weights), block_weights, loads, owner)
    if refine:
        _refine_kernel(block_weights, owner, loads, 4 * block_weights.shape[0] + 16)
        loads = rank_loads(block_weights, owner, world)  # re-summed, free of incremental rounding
    return owner, _imbalance(loads)


def rank_loads(block_weights: NDArray[np.float64], owner: NDArray[np.int64], world: int) -> NDArray[np.float64]:
    """Total weight held by each rank."""
    return np.bincount(owner, weights=block_weights, minlength=world).astype(np.float64)


def assign_blocks_ref(block_weights: NDArray[np.float64], world: int, *, refine: bool = True) -> tuple[NDArray[np.int64], float]:
    """Twin of assign_blocks: LPT with a heap of (load, rank); refinement written with NumPy gains."""
    block_weights = np.asarray(block_weights, dtype=np.float64)
    heap = [(0.0, r) for r in range(world)]
    owner = np.empty(block_weights.shape[0], dtype=np.int64)
    for b in _lpt_order(block_weights):
        load, r = heapq.heappop(heap)
        owner[b] = r
        heapq.heappush(heap, (load + float(block_weights[b]), r))
    loads = np.zeros(world)
    for load, r in heap:
        loads[r] = load
    if refine:
        _refine_ref(block_weights, owner, loads, 4 * block_weights.shape[0] + 16)
        loads = rank_loads(block_weights, owner, world)
    return owner, _imbalance(loads)


def _refine_ref(block_weights, owner, loads, max_rounds) -> None:
    """Twin of _refine_kernel: the same candidates, gains computed as arrays, first best in scan order."""
    world = loads.shape[0]
    for _ in range(max_rounds):
        a = int(np.argmax(loads))
        la = loads[a]
        xs = np.flatnonzero(owner == a)
        best = (1e-12 * la, -1, -1, -1)
        for x in xs:
            wx = block_weights[x]
            cand = []
            ok = (np.arange(world) != a) & (0.0 < wx) & (wx < la - loads)
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
