"""RankSampler: eligibility (masks, holdout split) -> weights -> shards packed onto ranks -> plan(epoch).

Built once per rank. The weights are computed over all N images (O(N) float64 on every rank: the
class counts, and so every weight, depend on the whole dataset); the alias table and the pool of
images are only over the rank's own blocks, O(N/world). plan(epoch, start, stop) is a pure
function of (seed, epoch, rank, world): resuming at step s is plan(epoch, start=s * batch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from tagstream.kernels.assign import block_weights, pack_shards, rank_loads
from tagstream.kernels.counts import class_counts, class_weight_sums
from tagstream.kernels.plan import build_rank_table, plan_length, plan_slice
from tagstream.kernels.rng import holdout_mask
from tagstream.kernels.weights import COMBINES, sample_weights, sampling_power
from tagstream.loader.config import SPLITS

if TYPE_CHECKING:
    from tagstream.loader.config import LoaderConfig
    from tagstream.loader.dataset import Dataset
    from tagstream.loader.vocab import Vocab


def eligibility(
    dataset: Dataset,
    *,
    masks: tuple[str, ...] = (),
    holdout_fraction: float = 0.0,
    split: str = "all",
    holdout_seed: int = 0,
) -> NDArray[np.bool_]:
    """True = may be drawn. Masks (masks/NAME.npy, True = excluded) remove images; with a holdout
    fraction, split "train" removes the held-out images and "holdout" keeps only them.
    The holdout split is keyed by holdout_seed, not the training seed, so it never moves between runs."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    ok = np.ones(dataset.num_images, dtype=np.bool_)
    for name in masks:
        ok &= ~np.asarray(dataset.load_mask(name))
    if holdout_fraction > 0 and split != "all":
        held = holdout_mask(dataset.num_images, holdout_fraction, holdout_seed)
        ok &= held if split == "holdout" else ~held
    return ok


class RankSampler:
    """One rank's view of the resampled epochs. See the module docstring for the memory trade-off."""

    def __init__(
        self,
        dataset: Dataset,
        vocab: Vocab,
        *,
        sampling: str = "sqrt",
        combine: str = "sum",
        eligible: NDArray[np.bool_] | None = None,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        samples_per_epoch: int | None = None,
        replacement: bool = True,
    ):
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank={rank} must be in [0, world={world}) with world >= 1")
        if combine not in COMBINES:
            raise ValueError(f"combine={combine!r} is not one of {COMBINES}")
        power = sampling_power(sampling)
        if not replacement and power is not None:
            raise ValueError(f"replacement=False needs sampling='natural' (a permutation), got sampling={sampling!r}")
        self.dataset, self.vocab = dataset, vocab
        self.sampling, self.combine, self.seed, self.rank, self.world = sampling, combine, seed, rank, world
        self.replacement = replacement
        offsets, labels = np.asarray(vocab.label_offsets), np.asarray(vocab.labels)
        self.counts: NDArray[np.int64] = class_counts(offsets, labels, eligible, np.zeros(vocab.num_classes, np.int64))
        self.weights: NDArray[np.float64] = sample_weights(
            offsets, labels, self.counts, power, combine, eligible, np.empty(dataset.num_images, np.float64)
        )
        self.num_drawable = int(np.count_nonzero(self.weights))
        if self.num_drawable == 0:
            raise ValueError("no image can be drawn: every image is masked out, held out, or has no class in the vocabulary")
        self.samples_per_epoch = self.num_drawable if samples_per_epoch is None else int(samples_per_epoch)
        self.len_per_rank = plan_length(self.samples_per_epoch, world)
        packing = pack_shards(dataset.shard_starts, self.weights, world)
        self.block_starts: NDArray[np.int64] = packing.block_starts
        self.owner: NDArray[np.int64] = packing.owner
        self.imbalance = packing.imbalance  # max rank weight / mean - 1 (the packing error of the law)
        self.imbalance_whole_shards = packing.imbalance_whole_shards
        self.block_weights = block_weights(self.block_starts, self.weights)
        self.rank_weights = rank_loads(self.block_weights, self.owner, world)
        if not np.all(self.rank_weights > 0):
            # raised on every rank alike, so no rank goes on to wait for one that failed
            empty = np.flatnonzero(self.rank_weights <= 0).tolist()
            raise ValueError(
                f"ranks {empty} of world={world} own no image with positive weight: "
                f"{self.num_drawable} drawable images are too few for this world size"
            )
        self.owned_blocks: NDArray[np.int64] = np.flatnonzero(self.owner == rank).astype(np.int64)
        self.table = build_rank_table(self.weights, self.block_starts, self.owner, rank, replacement=replacement)

    @classmethod
    def from_config(
        cls, config: LoaderConfig, dataset: Dataset, vocab: Vocab, *, rank: int = 0, world: int = 1, replacement: bool = True
    ) -> RankSampler:
        """The sampler a LoaderConfig describes (masks, holdout split, sampling, combine, seed, samples)."""
        ok = eligibility(dataset, masks=config.masks, holdout_fraction=config.holdout_fraction, split=config.split)
        return cls(
            dataset, vocab, sampling=config.sampling, combine=config.combine, eligible=ok, seed=config.seed,
            rank=rank, world=world, samples_per_epoch=config.samples_per_epoch, replacement=replacement,
        )

    def __len__(self) -> int:
        return self.len_per_rank

    def plan(self, epoch: int, start: int = 0, stop: int | None = None) -> NDArray[np.int64]:
        """Global image indices [start, stop) of this rank's plan for epoch (int64)."""
        return plan_slice(
            self.table, seed=self.seed, epoch=epoch, rank=self.rank, length=self.len_per_rank, start=start, stop=stop
        )

    def owned_ranges(self) -> NDArray[np.int64]:
        """(n, 2) [lo, hi) image ranges of this rank's blocks."""
        b = self.owned_blocks
        return np.stack([self.block_starts[b], self.block_starts[b + 1]], axis=1)

    def expected_class_draws(self, *, ideal: bool = False) -> NDArray[np.float64]:
        """Expected draws per epoch (all ranks together) of an image carrying each class, float64[C].

        Exact for this plan: rank r draws len_per_rank times from w_i / W_r over its images. With
        ideal=True, the formula alone (samples_per_epoch · sum_i w_i [c in C(i)] / W), without the
        rank packing error. Without replacement the same expectations hold (w_i = 1).
        """
        offsets, labels = np.asarray(self.vocab.label_offsets), np.asarray(self.vocab.labels)
        if ideal:
            per_image = self.weights * (self.samples_per_epoch / self.weights.sum())
        else:
            scale = np.divide(self.len_per_rank, self.rank_weights, out=np.zeros(self.world), where=self.rank_weights > 0)
            per_image = self.weights.copy()
            for lo, hi, r in zip(self.block_starts[:-1], self.block_starts[1:], self.owner):
                per_image[lo:hi] *= scale[r]
        return class_weight_sums(offsets, labels, per_image, np.zeros(self.vocab.num_classes))
