"""Augmentation parameters as pure functions of (seed, epoch, partition, position in the partition's plan):
torchvision's RandomResizedCrop window and a flip bit from a counter-based RNG, so a resumed run gets the
same crops without saving any RNG state, whatever worker computed a sample and whatever world size serves
the partition (loader/sampling/partitions.py partition_positions; with one partition per rank, partition = rank and the
position is the rank's). Python per sample: the reference for kernels/crops.py, which computes the same numbers for a
whole batch (what each costs: docs/costs.md)."""

from __future__ import annotations

import math

from tagstream.kernels.rng import GAMMA
from tagstream.kernels.rng import MASK64 as _MASK
from tagstream.kernels.rng import splitmix64_int as _mix

_GOLDEN = int(GAMMA)
_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 windows before the centre fallback


class CounterRNG:
    """Draw k of the stream keyed by (seed, epoch, partition, position) depends only on those and k."""

    __slots__ = ("_key", "_k")

    def __init__(self, seed: int, epoch: int, partition: int, position: int):
        key = _mix(int(seed) & _MASK)
        for part in (epoch, partition, position):
            key = _mix(key ^ (int(part) & _MASK))
        self._key = key
        self._k = 0

    def next_u64(self) -> int:
        self._k += 1
        return _mix(self._key ^ ((self._k * _GOLDEN) & _MASK))

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * ((self.next_u64() >> 11) * (1.0 / (1 << 53)))

    def randint(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi) (hi > lo), like torch.randint(lo, hi)."""
        return lo + self.next_u64() % (hi - lo)


def random_resized_crop(
    width: int,
    height: int,
    rng: CounterRNG,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """torchvision.transforms.RandomResizedCrop.get_params with our RNG: (x, y, w, h) in pixels.

    Tries 10 windows of area in `scale` × image area and log-uniform aspect ratio in `ratio`; if none
    fits, the largest centred window whose aspect ratio is clamped to `ratio`.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size {width}x{height} must be at least 1x1")
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(_ATTEMPTS):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y = rng.randint(0, height - h + 1)
            x = rng.randint(0, width - w + 1)
            return x, y, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = max(1, int(round(w / min(ratio))))
    elif in_ratio > max(ratio):
        h = height
        w = max(1, int(round(h * max(ratio))))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def train_params(
    width: int,
    height: int,
    *,
    seed: int,
    epoch: int,
    position: int,
    partition: int | None = None,
    rank: int | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[tuple[int, int, int, int], bool]:
    """The crop window (x, y, w, h) and horizontal-flip bit of the sample at `position` of a partition's epoch plan.

    Give `partition`, or `rank` for a run of one partition per rank (the same key: partition = rank).
    """
    if (partition is None) == (rank is None):
        raise ValueError(
            f"give one of partition={partition} and rank={rank} (the same key with one partition per rank)"
        )
    rng = CounterRNG(seed, epoch, rank if partition is None else partition, position)
    window = random_resized_crop(width, height, rng, scale=scale, ratio=ratio)
    return window, bool(rng.next_u64() >> 63)
