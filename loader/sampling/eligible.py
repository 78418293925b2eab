"""Which images may be drawn: masks and the holdout split, described by settings and evaluated per image range.

A rank asks only for its own ranges (masks are read by range, the holdout split is a per-image hash),
so eligibility costs O(range), never O(N); the settings also key the sampling cache (loader/sampling/cache.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from tagstream.kernels.rng import holdout_mask
from tagstream.loader.data import format as fmt
from tagstream.loader.data.npyrange import NpyRange

if TYPE_CHECKING:
    from tagstream.loader.data.dataset import Dataset

SPLITS = ("train", "holdout", "all")  # which images of a held-out split a loader reads


class RangeEligibility(Protocol):
    def of(self, dataset: Dataset, lo: int, hi: int) -> NDArray[np.bool_]: ...

    def settings(self) -> dict | None: ...


@dataclass(frozen=True)
class Eligibility:
    """Masks (masks/NAME.npy, True = excluded) remove images; with a holdout fraction, split "train" removes
    the held-out images and "holdout" keeps only them. The split is keyed by holdout_seed, not the training
    seed, so it never moves between runs."""

    masks: tuple[str, ...] = ()
    holdout_fraction: float = 0.0
    split: str = "all"
    holdout_seed: int = 0

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split={self.split!r} is not one of {SPLITS}")
        if not 0.0 <= self.holdout_fraction <= 1.0:
            raise ValueError(f"holdout fraction={self.holdout_fraction} must be in [0, 1]")
        object.__setattr__(self, "masks", tuple(self.masks))

    def check(self, dataset: Dataset) -> None:
        """Every mask exists and has the dataset's shape (ValueError / FormatError naming it). O(1)."""
        for name in self.masks:
            dataset.load_mask(name)

    def of(self, dataset: Dataset, lo: int, hi: int) -> NDArray[np.bool_]:
        """bool[hi - lo]: True where image lo + t may be drawn."""
        ok = np.ones(hi - lo, dtype=np.bool_)
        for name in self.masks:
            dataset.load_mask(name)  # validates name, dtype and shape (a mapping: no data read)
            ok &= ~NpyRange(fmt.mask_path(dataset.root, name)).read(lo, hi)
        if self.holdout_fraction > 0 and self.split != "all":
            held = holdout_mask(hi - lo, self.holdout_fraction, self.holdout_seed, start=lo)
            ok &= held if self.split == "holdout" else ~held
        return ok

    def settings(self) -> dict:
        """What decides eligibility, for the cache key (mask order does not matter: they are intersected)."""
        return {
            "masks": sorted(set(self.masks)),
            "holdout_fraction": float(self.holdout_fraction),
            "split": self.split if self.holdout_fraction > 0 else "all",
            "holdout_seed": int(self.holdout_seed),
        }


@dataclass(frozen=True)
class GivenEligibility:
    """Eligibility from a caller's bool array over all images (O(N); never cached: nothing names its content)."""

    eligible: NDArray[np.bool_]

    def of(self, dataset: Dataset, lo: int, hi: int) -> NDArray[np.bool_]:
        return np.asarray(self.eligible[lo:hi], dtype=np.bool_)

    def settings(self) -> None:
        return None


def as_eligibility(eligible: RangeEligibility | NDArray[np.bool_] | None, num_images: int) -> RangeEligibility:
    """None -> every image; a bool array of shape (N,) -> GivenEligibility; an Eligibility as it is."""
    if eligible is None:
        return Eligibility()
    if isinstance(eligible, (Eligibility, GivenEligibility)):
        return eligible
    arr = np.asarray(eligible)
    if arr.dtype != np.bool_ or arr.shape != (num_images,):
        raise ValueError(f"eligible must be bool of shape ({num_images},), got {arr.dtype} {arr.shape}")
    return GivenEligibility(arr)


def eligibility(
    dataset: Dataset,
    *,
    masks: tuple[str, ...] = (),
    holdout_fraction: float = 0.0,
    split: str = "all",
    holdout_seed: int = 0,
) -> NDArray[np.bool_]:
    """True = may be drawn, for all N images (O(N): for tools and evaluation; samplers ask per range)."""
    rule = Eligibility(masks=tuple(masks), holdout_fraction=holdout_fraction, split=split, holdout_seed=holdout_seed)
    rule.check(dataset)
    return rule.of(dataset, 0, dataset.num_images)


EVAL_CHUNK = 1 << 24  # images whose eligibility is computed at once when a rank finds its eval share


def eval_share_of(
    dataset: Dataset, rule: Eligibility, rank: int, world: int, *, chunk: int = EVAL_CHUNK
) -> tuple[NDArray[np.int64], int]:
    """(rank r's contiguous share of the eligible images in dataset order, M the eligible count): the share is
    eligible[floor(r*M/world) : floor((r+1)*M/world)], found chunk by chunk, so memory is one chunk plus the
    share (an array over all N images was 9 bytes an image per rank: ~30 GB for `embed` over 3.5e9 images).
    Time is O(N) per rank (one pass counting, then the chunks that hold the share again)."""
    rule.check(dataset)
    n = dataset.num_images
    if not rule.masks and (rule.holdout_fraction == 0 or rule.split == "all"):  # every image: no pass needed
        return np.arange((rank * n) // world, ((rank + 1) * n) // world, dtype=np.int64), n
    starts = range(0, n, chunk)
    counts = [int(rule.of(dataset, lo, min(n, lo + chunk)).sum()) for lo in starts]
    m = sum(counts)
    first, last = (rank * m) // world, ((rank + 1) * m) // world
    parts, seen = [], 0
    for lo, count in zip(starts, counts):
        if seen < last and seen + count > first:
            found = lo + np.flatnonzero(rule.of(dataset, lo, min(n, lo + chunk)))
            parts.append(found[max(0, first - seen) : last - seen])
        seen += count
    return (np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)), m


def thin_eval_share(
    share: NDArray[np.int64], eligible: int, rank: int, world: int, most: int
) -> tuple[NDArray[np.int64], int]:
    """(rank r's part of a bounded evaluation, the largest part of any rank) from its share of eval_share_of: of the
    M eligible images in dataset order, those at positions floor(j * M / most) for j < most (every image when
    M <= most, or most < 1), so exactly `most` images are read, evenly spread over the whole dataset, and the same
    ones on every world size (positions counted over all ranks)."""
    bounds = [(q * eligible) // world for q in range(world + 1)]
    if most < 1 or eligible <= most:
        return share, max(hi - lo for lo, hi in zip(bounds, bounds[1:]))
    # position floor(j*M/most) >= a  <=>  j >= ceil(a*most/M): rank q reads j in [ceil(a*most/M), ceil(b*most/M))
    firsts = [-(-(b * most) // eligible) for b in bounds]
    j = np.arange(firsts[rank], firsts[rank + 1], dtype=np.int64)
    return share[(j * eligible) // most - bounds[rank]], max(hi - lo for lo, hi in zip(firsts, firsts[1:]))
