"""Epoch plans of partitions: a pure function of (weights, blocks, owner, seed, epoch, partition, partitions,
samples) -> int64 global image indices.

The contract: the sample stream is cut into P partitions, P fixed when a run starts (loader/sampling/partitions.py).
The packing (kernels/assign.py) gives each partition blocks of about equal total weight (`owner` holds the
partition of each block), and each partition draws its own plan of samples_per_epoch // P entries, keyed by
(seed, epoch, partition) only: no rank and no world size enters a plan, so a run resumed on any world size that
divides P draws the same plans. Which partitions a rank serves, and how it lays their plans end to end into its
batches, is decided above the kernels (loader/sampling/partitions.py, loader/sampling/sampler.py).

With replacement, a partition draws from an alias table over the positive-weight images of its own blocks
(memory O(N / P)); without replacement (natural sampling), its plan is a keyed Feistel permutation of those
images, repeated with a fresh key per pass and truncated. Both are counter-based, so plan[start:stop] costs
O(stop - start) and never generates the prefix. Every partition gets exactly samples_per_epoch // P entries, so
no rank waits for another in a collective.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray

from tagstream.kernels.alias import build_alias, draw_alias
from tagstream.kernels.rng import counter_u64, counter_u64_ref, stream_key

_DRAW_TAG = 0xD7A3  # separates the with-replacement stream from the permutation streams
_PERM_TAG = 0x9E7
_ROUNDS = 4
_U1 = np.uint64(1)
_U4 = np.uint64(4)


@dataclass(frozen=True)
class PartitionTable:
    """What a partition keeps between epochs: its pool of images and, with replacement, their alias table."""

    pool: NDArray[np.int64]  # global indices of the partition's positive-weight images, ascending
    prob: NDArray[np.float64]  # alias table over pool (empty without replacement)
    alias: NDArray[np.int64]
    weight: float  # total weight of the pool
    replacement: bool


def plan_length(samples_per_epoch: int, partitions: int) -> int:
    """Entries per partition per epoch: samples_per_epoch // partitions (> 0, else ValueError)."""
    if partitions < 1:
        raise ValueError(f"partitions={partitions} must be >= 1")
    if samples_per_epoch < partitions:
        raise ValueError(
            f"samples_per_epoch={samples_per_epoch} must be >= partitions={partitions} "
            "(every partition needs >= 1 sample)"
        )
    return samples_per_epoch // partitions


def partition_pool(
    weights: NDArray[np.float64], block_starts: NDArray[np.int64], owner: NDArray[np.int64], partition: int
) -> NDArray[np.int64]:
    """Global indices of the positive-weight images in the blocks owned by partition, ascending."""
    blocks = np.flatnonzero(np.asarray(owner) == partition)
    parts = [lo + np.flatnonzero(weights[lo:hi] > 0) for lo, hi in zip(block_starts[blocks], block_starts[blocks + 1])]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def build_partition_table(
    weights: NDArray[np.float64],
    block_starts: NDArray[np.int64],
    owner: NDArray[np.int64],
    partition: int,
    *,
    replacement: bool = True,
) -> PartitionTable:
    """The partition's pool (and alias table when drawing with replacement). ValueError if the pool is empty."""
    weights = np.asarray(weights, dtype=np.float64)
    if block_starts[-1] != weights.shape[0] or owner.shape[0] != block_starts.shape[0] - 1:
        raise ValueError(
            f"blocks do not match: block_starts ends at {int(block_starts[-1])} for {weights.shape[0]} weights, "
            f"{owner.shape[0]} owners for {block_starts.shape[0] - 1} blocks"
        )
    pool = partition_pool(weights, block_starts, owner, partition)
    if pool.shape[0] == 0:
        raise ValueError(
            f"partition {partition} owns no image with positive weight: "
            "too few eligible images or blocks for this many partitions"
        )
    return table_from_pool(pool, weights[pool], replacement=replacement)


def table_from_pool(
    pool: NDArray[np.int64], pool_weights: NDArray[np.float64], *, replacement: bool = True
) -> PartitionTable:
    """The table over a non-empty pool (ascending global indices) of positive-weight images and their weights."""
    w = np.asarray(pool_weights, dtype=np.float64)
    if pool.shape[0] == 0 or w.shape != pool.shape:
        raise ValueError(f"a table needs a non-empty pool and one weight per image, got {pool.shape[0]} and {w.shape}")
    if not replacement:
        return PartitionTable(pool, np.zeros(0), np.zeros(0, np.int64), float(w.sum()), False)
    prob = np.empty(pool.shape[0], dtype=np.float64)
    alias = np.empty(pool.shape[0], dtype=np.int64)
    total = build_alias(w, prob, alias)
    return PartitionTable(pool, prob, alias, total, True)


def _domain_bits(n: int) -> int:
    """Half width h of the Feistel domain 2^(2h) >= n (h >= 1)."""
    return max(1, ((max(n - 1, 1)).bit_length() + 1) // 2)


@numba.njit(cache=True)
def _feistel_kernel(n, half, key, pos_start, out) -> None:
    """out[t] = pi_key(pos_start + t), pi_key a bijection of [0, n): 4-round Feistel with cycle walking."""
    h = np.uint64(half)
    mask = (_U1 << h) - _U1
    un = np.uint64(n)
    for t in range(out.shape[0]):
        x = np.uint64(pos_start + t)
        while True:
            left = x >> h
            right = x & mask
            for r in range(_ROUNDS):
                f = counter_u64(key, right * _U4 + np.uint64(r)) & mask
                left, right = right, left ^ f
            x = (left << h) | right
            if x < un:
                break
        out[t] = np.int64(x)


def feistel_permute(n: int, key: np.uint64, pos_start: int, out: NDArray[np.int64]) -> NDArray[np.int64]:
    """out[t] = position that pos_start + t maps to under the keyed permutation of [0, n)."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    if pos_start < 0 or pos_start + out.shape[0] > n:
        raise ValueError(f"positions [{pos_start}, {pos_start + out.shape[0]}) fall outside [0, {n})")
    _feistel_kernel(np.int64(n), np.int64(_domain_bits(n)), np.uint64(key), np.int64(pos_start), out)
    return out


def feistel_permute_ref(n: int, key: np.uint64, positions: NDArray[np.int64]) -> NDArray[np.int64]:
    """NumPy twin of feistel_permute (vectorised cycle walking)."""
    h = np.uint64(_domain_bits(n))
    mask = (_U1 << h) - _U1
    x = np.asarray(positions, dtype=np.uint64).copy()
    todo = np.ones(x.shape[0], dtype=bool)
    while todo.any():
        y = x[todo]
        left, right = y >> h, y & mask
        for r in range(_ROUNDS):
            f = counter_u64_ref(key, right * _U4 + np.uint64(r)) & mask
            left, right = right, left ^ f
        x[todo] = (left << h) | right
        todo[todo] = x[todo] >= np.uint64(n)
    return x.astype(np.int64)


def draw_key(seed: int, epoch: int, partition: int) -> np.uint64:
    """The key of a partition's with-replacement draws in an epoch."""
    return stream_key(seed, _DRAW_TAG, epoch, partition)


def perm_key(seed: int, epoch: int, partition: int, cycle: int) -> np.uint64:
    """The key of a partition's permutation for one pass (cycle) over its pool in an epoch."""
    return stream_key(seed, _PERM_TAG, epoch, partition, cycle)


def plan_slice(
    table: PartitionTable,
    *,
    seed: int,
    epoch: int,
    partition: int,
    length: int,
    start: int = 0,
    stop: int | None = None,
) -> NDArray[np.int64]:
    """Entries [start, stop) of the partition's plan of the given length (global image indices)."""
    stop = length if stop is None else stop
    if not 0 <= start <= stop <= length:
        raise ValueError(f"slice [{start}, {stop}) must satisfy 0 <= start <= stop <= length={length}")
    out = np.empty(stop - start, dtype=np.int64)
    if table.replacement:
        draw_alias(table.prob, table.alias, draw_key(seed, epoch, partition), start, out)
        return table.pool[out]
    n = table.pool.shape[0]
    j = start
    while j < stop:
        cycle, pos = divmod(j, n)
        take = min(stop - j, n - pos)
        feistel_permute(n, perm_key(seed, epoch, partition, cycle), pos, out[j - start : j - start + take])
        j += take
    return table.pool[out]


def epoch_plan(
    weights: NDArray[np.float64],
    block_starts: NDArray[np.int64],
    owner: NDArray[np.int64],
    seed: int,
    epoch: int,
    partition: int,
    partitions: int,
    samples_per_epoch: int,
    replacement: bool = True,
    start: int = 0,
    stop: int | None = None,
) -> NDArray[np.int64]:
    """The partition's plan for this epoch (or its [start, stop) slice): samples_per_epoch // partitions global
    indices.

    Without replacement the weights only decide eligibility (w > 0): the plan is a permutation of the
    partition's eligible images, repeated (a new permutation per pass) or truncated to the length.
    """
    if not 0 <= partition < partitions:
        raise ValueError(f"partition={partition} must be in [0, partitions={partitions})")
    length = plan_length(samples_per_epoch, partitions)
    table = build_partition_table(weights, block_starts, owner, partition, replacement=replacement)
    return plan_slice(table, seed=seed, epoch=epoch, partition=partition, length=length, start=start, stop=stop)
