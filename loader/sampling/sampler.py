"""RankSampler: one rank's share of the resampled epochs, memory and start-up O(N / world).

eligibility (masks, holdout split: loader/sampling/eligible.py) -> class counts and per-shard weight sums over all
images, O(classes + shards), computed once and cached beside the vocabulary (loader/sampling/summary.py,
loader/sampling/cache.py) -> shards packed onto P partitions (kernels/assign.py, cached per P) -> the
labels, weights and alias tables of this rank's own blocks only -> plan(epoch). A partition's plan is a
pure function of (seed, epoch, partition); a rank serving several partitions lays their shares of each
step end to end (loader/sampling/partitions.py), so the global batches do not depend on the world size.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from numpy.typing import NDArray

from tagstream.kernels.assign import Packing, pack_shard_sums, partition_loads
from tagstream.kernels.counts import class_weight_sums
from tagstream.kernels.plan import PartitionTable, plan_length, plan_slice, table_from_pool
from tagstream.kernels.weights import sampling_power
from tagstream.loader.sampling.cache import SamplingCache
from tagstream.loader.sampling.eligible import Eligibility, RangeEligibility, as_eligibility, eligibility
from tagstream.loader.sampling.partitions import check_layout, check_serving, rank_positions, served
from tagstream.loader.sampling.range_weights import RangeWeights
from tagstream.loader.sampling.summary import SamplingSummary, compute_summary

if TYPE_CHECKING:
    from tagstream.loader.config import LoaderConfig
    from tagstream.loader.data.dataset import Dataset
    from tagstream.loader.data.vocab import Vocab

__all__ = ["Eligibility", "RankSampler", "eligibility", "prepare_sampling"]


class RankSampler:
    """A rank's sampler over the partitions it serves (see the module docstring): P partitions (default world,
    a multiple of world) each draw their own plan; rank r serves partitions r*P/world .. (r+1)*P/world - 1 and
    its plan lays their shares of every step end to end. A rank serving P / world > 1 partitions needs `share`,
    the samples each partition gives every global batch. `timings` and `cache_hits` say
    where start-up went (summary, packing, tables) and what the cache saved.
    """

    def __init__(
        self,
        dataset: Dataset,
        vocab: Vocab,
        *,
        sampling: str = "sqrt",
        combine: str = "sum",
        eligible: RangeEligibility | NDArray[np.bool_] | None = None,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        partitions: int | None = None,
        share: int | None = None,
        samples_per_epoch: int | None = None,
        replacement: bool = True,
        cache: bool = True,
    ):
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank={rank} must be in [0, world={world}) with world >= 1")
        self.partitions = world if partitions is None else int(partitions)
        if self.partitions < world or self.partitions % world:
            check_layout(self.partitions, world, 1)  # raises, naming the world sizes that work
        serves = self.partitions // world
        check_serving(serves, share)
        self.dataset, self.vocab = dataset, vocab
        self.sampling, self.combine, self.seed, self.rank, self.world = sampling, combine, seed, rank, world
        self.replacement, self.share = replacement, share if serves > 1 else None
        self.source = sampling_source(dataset, vocab, sampling=sampling, combine=combine, eligible=eligible)
        if not replacement and self.source.power is not None:
            raise ValueError(f"replacement=False needs sampling='natural' (a permutation), got sampling={sampling!r}")
        self.timings: dict[str, float] = {}
        self.cache_hits: dict[str, bool] = {}
        entry = cache_entry(self.source, sampling) if cache else None
        summary, packing = load_layout(self.source, entry, self.partitions, self.timings, self.cache_hits)
        self.counts: NDArray[np.int64] = summary.counts
        self.num_drawable = summary.num_drawable
        if packing is None:
            raise ValueError(
                "no image can be drawn: every image is masked out, held out, or has no class in the vocabulary"
            )
        self.samples_per_epoch = self.num_drawable if samples_per_epoch is None else int(samples_per_epoch)
        self.len_per_partition = plan_length(self.samples_per_epoch, self.partitions)
        self.block_starts: NDArray[np.int64] = packing.block_starts
        self.owner: NDArray[np.int64] = packing.owner  # the partition of each block
        self.imbalance = packing.imbalance  # max partition weight / mean - 1 (the packing error of the law)
        self.imbalance_whole_shards = packing.imbalance_whole_shards
        self.block_weights: NDArray[np.float64] = packing.block_weights
        self.partition_weights = partition_loads(self.block_weights, self.owner, self.partitions)
        if not np.all(self.partition_weights > 0):
            # raised on every rank alike, so no rank goes on to wait for one that failed
            empty = np.flatnonzero(self.partition_weights <= 0).tolist()
            raise ValueError(
                f"partitions {empty} of {self.partitions} (world={world}) own no image with positive weight: "
                f"{self.num_drawable} drawable images are too few for this many partitions"
            )
        self.served = served(rank, world, self.partitions)
        self.owned_blocks: NDArray[np.int64] = np.flatnonzero(np.isin(self.owner, np.array(self.served))).astype(
            np.int64
        )
        t = time.perf_counter()
        self.tables: list[PartitionTable] = [self._table(p) for p in self.served]
        self.timings["tables"] = time.perf_counter() - t
        if serves == 1:
            self.len_per_rank = self.len_per_partition
        else:  # whole steps only: every served partition gives `share` samples to each
            self.len_per_rank = (self.len_per_partition // self.share) * self.share * serves

    @classmethod
    def from_config(
        cls,
        config: LoaderConfig,
        dataset: Dataset,
        vocab: Vocab,
        *,
        rank: int = 0,
        world: int = 1,
        replacement: bool = True,
    ) -> RankSampler:
        """The sampler a LoaderConfig describes (masks, holdout split, sampling, combine, seed, samples, partitions)."""
        partitions = config.partitions or world
        share = check_layout(partitions, world, config.batch_size)
        rule = Eligibility(masks=config.masks, holdout_fraction=config.holdout_fraction, split=config.split)
        return cls(
            dataset,
            vocab,
            sampling=config.sampling,
            combine=config.combine,
            eligible=rule,
            seed=config.seed,
            rank=rank,
            world=world,
            partitions=partitions,
            share=share,
            samples_per_epoch=config.samples_per_epoch,
            replacement=replacement,
        )

    def __len__(self) -> int:
        return self.len_per_rank

    def plan(self, epoch: int, start: int = 0, stop: int | None = None) -> NDArray[np.int64]:
        """Global image indices [start, stop) of this rank's plan for epoch (int64)."""
        stop = self.len_per_rank if stop is None else stop
        if not 0 <= start <= stop <= self.len_per_rank:
            raise ValueError(f"slice [{start}, {stop}) must satisfy 0 <= start <= stop <= length={self.len_per_rank}")
        if len(self.tables) == 1:
            return self._partition_plan(0, epoch, start, stop)
        slot, pos = rank_positions(start, stop, len(self.tables), self.share)
        out = np.empty(stop - start, dtype=np.int64)
        for q in range(len(self.tables)):
            sel = slot == q
            if sel.any():
                lo, hi = int(pos[sel].min()), int(pos[sel].max()) + 1
                out[sel] = self._partition_plan(q, epoch, lo, hi)[pos[sel] - lo]
        return out

    def owned_ranges(self) -> NDArray[np.int64]:
        """(n, 2) [lo, hi) image ranges of this rank's blocks."""
        b = self.owned_blocks
        return np.stack([self.block_starts[b], self.block_starts[b + 1]], axis=1)

    def image_weights(self, lo: int = 0, hi: int | None = None) -> NDArray[np.float64]:
        """Sampling weights of images [lo, hi) (all images by default: O(N), for tools and tests)."""
        return self.source.weights(lo, self.dataset.num_images if hi is None else hi, self.counts)

    def expected_class_draws(self, *, ideal: bool = False) -> NDArray[np.float64]:
        """Expected draws per epoch (all partitions together) of an image carrying each class, float64[C].

        Exact for this plan: partition p draws len_per_partition times from w_i / W_p over its images. With
        ideal=True, the formula alone (samples_per_epoch · sum_i w_i [c in C(i)] / W), without the packing
        error. Without replacement the same expectations hold (w_i = 1). One pass over all blocks, O(N) time.
        """
        if ideal:
            scale = np.full(self.partitions, self.samples_per_epoch / float(self.block_weights.sum()))
        else:
            w = self.partition_weights
            scale = np.divide(self.len_per_partition, w, out=np.zeros(self.partitions), where=w > 0)
        out = np.zeros(self.vocab.num_classes)
        for lo, hi, p in zip(self.block_starts[:-1], self.block_starts[1:], self.owner):
            off, labels = self.source.labels_of(int(lo), int(hi))
            per_image = self.source.weights(int(lo), int(hi), self.counts) * scale[p]
            class_weight_sums(off, labels, per_image, out, accumulate=True)
        return out

    # -- start-up --------------------------------------------------------------------------------
    def _table(self, partition: int) -> PartitionTable:
        """The partition's pool (positive-weight images of its blocks, ascending) and alias table."""
        pools, weights = [], []
        for b in np.flatnonzero(self.owner == partition):
            lo, hi = int(self.block_starts[b]), int(self.block_starts[b + 1])
            w = self.source.weights(lo, hi, self.counts)
            keep = np.flatnonzero(w > 0)
            pools.append(lo + keep)
            weights.append(w[keep])
        pool = np.concatenate(pools).astype(np.int64)
        return table_from_pool(pool, np.concatenate(weights), replacement=self.replacement)

    def _partition_plan(self, slot: int, epoch: int, start: int, stop: int) -> NDArray[np.int64]:
        return plan_slice(
            self.tables[slot],
            seed=self.seed,
            epoch=epoch,
            partition=self.served[slot],
            length=self.len_per_partition,
            start=start,
            stop=stop,
        )


def sampling_source(
    dataset: Dataset,
    vocab: Vocab,
    *,
    sampling: str,
    combine: str,
    eligible: RangeEligibility | NDArray[np.bool_] | None,
) -> RangeWeights:
    """The weights of any image range under this rule: the sampling string parsed into its power here, once (the
    combine rule is checked by RangeWeights, the masks by the eligibility rule)."""
    rule = as_eligibility(eligible, dataset.num_images)
    if isinstance(rule, Eligibility):
        rule.check(dataset)
    return RangeWeights(dataset, vocab, power=sampling_power(sampling), combine=combine, eligible=rule)


def cache_entry(source: RangeWeights, sampling: str) -> SamplingCache | None:
    """The cache entry of a rule given by settings (None for a caller's eligibility array: nothing names it)."""
    what = source.eligible.settings()
    if what is None:
        return None
    return SamplingCache(source.dataset, source.vocab, {"sampling": sampling, "combine": source.combine, **what})


def load_layout(
    source: RangeWeights,
    entry: SamplingCache | None,
    partitions: int | None,
    timings: dict[str, float],
    hits: dict[str, bool],
) -> tuple[SamplingSummary, Packing | None]:
    """The summary, and the packing onto `partitions` (None when nothing can be drawn or partitions is None):
    each read from the cache or computed and saved under the entry's lock (one process computes, the others read).
    Records seconds per step in timings and cache hits in hits."""
    ds = source.dataset

    def cached(name: str, load: Callable[[], Any], compute: Callable[[], Any], save: Callable[[Any], None]) -> Any:
        t = time.perf_counter()
        if entry is None:
            value = compute()
        else:
            with entry.locked():
                value = load()
                hits[name] = value is not None
                if value is None:
                    value = compute()
                    save(value)
        timings[name] = time.perf_counter() - t
        return value

    summary: SamplingSummary = cached(
        "summary",
        lambda: entry.load_summary(),
        lambda: compute_summary(source, ds.shard_starts, source.vocab.num_classes),
        lambda v: entry.save_summary(v),
    )
    if partitions is None or summary.num_drawable == 0:
        return summary, None
    packing = cached(
        "packing",
        lambda: entry.load_packing(partitions),
        lambda: pack_shard_sums(
            ds.shard_starts, summary.shard_sums, partitions, lambda lo, hi: source.weights(lo, hi, summary.counts)
        ),
        lambda v: entry.save_packing(partitions, v),
    )
    return summary, packing


def prepare_sampling(
    dataset: Dataset,
    vocab: Vocab,
    *,
    sampling: str = "sqrt",
    combine: str = "sum",
    eligible: Eligibility | None = None,
    partitions: int | None = None,
) -> dict[str, Any]:
    """Fill the cache before a run: the summary (one O(N) pass) and, with partitions, the packing, so the ranks
    of a large run only read them. Returns {"timings": seconds per step, "cache_hits": ...}."""
    source = sampling_source(dataset, vocab, sampling=sampling, combine=combine, eligible=eligible)
    entry = cache_entry(source, sampling)
    timings: dict[str, float] = {}
    hits: dict[str, bool] = {}
    load_layout(source, entry, partitions, timings, hits)
    return {"timings": timings, "cache_hits": hits}
