"""Partitions: the unit of the sample stream, fixed when a run starts, so a run can resume on another world size.

The global batch sequence is a pure function of (seed, epoch, step, P): P partitions each own blocks of
about equal weight and draw `share` = global batch / P samples of every global batch from their own plan.
Rank r of world W (W dividing P) serves partitions r*P/W .. (r+1)*P/W - 1, and its batch at step s is
their shares of step s laid end to end. With P = W a rank is one partition: the plan of before.
A sample's augmentation is keyed by (partition, position in the partition's plan) (`partition_positions`), not
by the rank's position, so a run resumed on another world size gets the same crops and flips too.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def working_worlds(partitions: int) -> list[int]:
    """The world sizes a run of P partitions can run or resume on: the divisors of P."""
    return [w for w in range(1, partitions + 1) if partitions % w == 0]


def check_layout(partitions: int, world: int, batch_size: int) -> int:
    """Refuse a world size that does not divide P, or a per-rank batch P/W partitions cannot share evenly;
    returns the share (samples of each partition in every global batch)."""
    if partitions < 1 or world < 1 or batch_size < 1:
        raise ValueError(f"partitions={partitions}, world={world} and batch_size={batch_size} must be >= 1")
    if partitions % world:
        raise ValueError(
            f"world size {world} does not divide partitions={partitions} (fixed when the run started): "
            f"world sizes that work: {', '.join(map(str, working_worlds(partitions)))}"
        )
    per_rank = partitions // world
    if batch_size % per_rank:
        raise ValueError(
            f"batch_size={batch_size} per rank cannot be shared by the {per_rank} partitions each rank serves "
            f"(partitions={partitions}, world={world}): the global batch {batch_size * world} must be a multiple of {partitions}"
        )
    return batch_size // per_rank


def served(rank: int, world: int, partitions: int) -> range:
    """The partitions rank serves (contiguous)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank={rank} must be in [0, world={world})")
    k = partitions // world
    return range(rank * k, (rank + 1) * k)


def rank_positions(start: int, stop: int, serves: int, share: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Positions [start, stop) of a rank serving `serves` partitions -> (which of them, position in its plan).

    Step s of the rank is serves * share positions: partition q's entries s*share .. (s+1)*share - 1, for q
    in order. One partition (serves=1) maps every position to itself.
    """
    j = np.arange(start, stop, dtype=np.int64)
    if serves == 1:
        return np.zeros(j.shape[0], np.int64), j
    step, within = np.divmod(j, serves * share)
    slot, offset = np.divmod(within, share)
    return slot, step * share + offset


def check_serving(serves: int, share: int | None) -> None:
    """A source serving `serves` partitions needs their `share` of each step (one partition: none)."""
    if serves < 1 or (serves > 1 and (share is None or share < 1)):
        raise ValueError(
            f"serves={serves} partitions must be >= 1, and a rank serving more than one needs share >= 1, got share={share}"
        )


def partition_positions(
    rank: int, serves: int, share: int | None, start: int, stop: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Positions [start, stop) of the plan of a rank serving `serves` partitions -> (partition, position in the
    partition's plan) of each: the key of its augmentation (loader/pipeline/augment.py, kernels/crops.py), the same
    whatever world size serves the sample. One partition per rank: (rank, position), the key of before."""
    slot, position = rank_positions(start, stop, serves, share or 1)
    return rank * serves + slot, position


def partition_position(rank: int, serves: int, share: int | None, position: int) -> tuple[int, int]:
    """partition_positions of one position, in plain integers (the per-sample source's path)."""
    if serves == 1:
        return rank, position
    step, within = divmod(position, serves * share)
    slot, offset = divmod(within, share)
    return rank * serves + slot, step * share + offset
