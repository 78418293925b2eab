"""RankSampler: one rank's share of the resampled epochs, memory and start-up O(N / world).

eligibility (masks, holdout split: loader/sampling/eligible.py) -> class counts and per-shard weight sums over all
images, O(classes + shards), computed once and cached beside the vocabulary (loader/sampling/summary.py,
loader/sampling/cache.py) -> shards packed onto P partitions (kernels/assign.py, cached per P) -> the
labels, weights and alias tables of this rank's own blocks only -> plan(epoch). A partition's plan is a
pure function of (seed, epoch, partition); a rank serving several partitions lays their shares of each
step end to end (loader/sampling/partitions.py), so the global batches do not depend on the world size.

one_pass=True (natural sampling): an epoch visits every drawable image exactly once. The packing is evened
to whole images (kernels/balance.py: every partition holds q or q + 1), a partition's plan is one keyed
permutation of its images, and the epoch is whole global batches: the last one filled up with the start of
each partition's order (drop_last=False) or left out (drop_last=True).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from numpy.typing import NDArray

from tagstream.kernels.assign import Packing, pack_shard_sums, partition_loads
from tagstream.kernels.balance import balance_counts
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
        one_pass: bool = False,
        drop_last: bool = False,
        cache: bool = True,
    ):
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank={rank} must be in [0, world={world}) with world >= 1")
        if not replacement and sampling_power(sampling) is not None:
            raise ValueError(f"replacement=False needs sampling='natural' (a permutation), got sampling={sampling!r}")
        check_one_pass(one_pass=one_pass, drop_last=drop_last, sampling=sampling, samples_per_epoch=samples_per_epoch)
        replacement = replacement and not one_pass
        self.partitions = world if partitions is None else int(partitions)
        if self.partitions < world or self.partitions % world:
            check_layout(self.partitions, world, 1)  # raises, naming the world sizes that work
        serves = self.partitions // world
        check_serving(serves, share)
        self.dataset, self.vocab = dataset, vocab
        self.sampling, self.combine, self.seed, self.rank, self.world = sampling, combine, seed, rank, world
        self.replacement, self.share = replacement, share if serves > 1 else None
        self.one_pass, self.drop_last = one_pass, drop_last
        self.source = sampling_source(dataset, vocab, sampling=sampling, combine=combine, eligible=eligible)
        if not replacement and self.source.power is not None:
            raise ValueError(f"replacement=False needs sampling='natural' (a permutation), got sampling={sampling!r}")
        self.timings: dict[str, float] = {}
        self.cache_hits: dict[str, bool] = {}
        entry = cache_entry(self.source, sampling) if cache else None
        summary, packing = load_layout(
            self.source, entry, self.partitions, self.timings, self.cache_hits, one_pass=one_pass
        )
        self.counts: NDArray[np.int64] = summary.counts
        self.num_drawable = summary.num_drawable
        if packing is None:
            raise ValueError(
                "no image can be drawn: every image is masked out, held out, or has no class in the vocabulary"
            )
        self.padded = self.dropped = 0  # one_pass: repeats filling the last global batch, or images left out
        if one_pass:
            global_batch = (share or 1) * self.partitions
            steps = self.num_drawable // global_batch if drop_last else -(-self.num_drawable // global_batch)
            if steps == 0:
                raise ValueError(
                    f"drop_last=True leaves no batch: {self.num_drawable} drawable images are fewer than one "
                    f"global batch of {global_batch}; lower batch_size or set drop_last=False"
                )
            self.samples_per_epoch = steps * global_batch
            self.padded = max(0, self.samples_per_epoch - self.num_drawable)
            self.dropped = max(0, self.num_drawable - self.samples_per_epoch)
            self.len_per_partition = steps * (share or 1)
        else:
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
        """The sampler a LoaderConfig describes (masks, holdout split, sampling, combine, seed, samples, partitions,
        one-pass epochs and their last batch)."""
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
            one_pass=config.one_pass,
            drop_last=config.drop_last,
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
        table, partition = self.tables[slot], self.served[slot]
        if not self.one_pass:
            length = self.len_per_partition
            return plan_slice(
                table, seed=self.seed, epoch=epoch, partition=partition, length=length, start=start, stop=stop
            )
        # one pass: the partition's permutation of its n images; positions from n on (padding of the last
        # global batch) repeat it from its start, so they stay in the partition's own shards
        n = table.pool.shape[0]
        pieces, j = [], start
        while j < stop or not pieces:
            lo = j % n
            hi = min(n, lo + stop - j)
            pieces.append(
                plan_slice(table, seed=self.seed, epoch=epoch, partition=partition, length=n, start=lo, stop=hi)
            )
            j += hi - lo
        return np.concatenate(pieces)


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


def check_one_pass(
    *, prefix: str = "", one_pass: bool, drop_last: bool, sampling: str, samples_per_epoch: int | None
) -> None:
    """One-pass epochs are natural sampling's (the other laws are laws over draws) and as long as the images;
    `prefix` names the keys as the user wrote them ("data." in a recipe)."""
    for name, value in (("one_pass", one_pass), ("drop_last", drop_last)):
        if not isinstance(value, bool):
            raise ValueError(f"{prefix}{name}={value!r} must be true or false")
    if one_pass and sampling != "natural":
        raise ValueError(
            f"{prefix}one_pass=True needs {prefix}sampling='natural', got {sampling!r}: sqrt, uniform and power:A "
            "are laws over draws with replacement, not one pass over the images"
        )
    if one_pass and samples_per_epoch is not None:
        raise ValueError(
            f"{prefix}samples_per_epoch={samples_per_epoch} cannot be set with {prefix}one_pass=True: "
            "an epoch is one pass over the images"
        )
    if drop_last and not one_pass:
        raise ValueError(
            f"{prefix}drop_last=True applies to {prefix}one_pass=True epochs (draws with replacement fill every batch)"
        )


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
    *,
    one_pass: bool = False,
) -> tuple[SamplingSummary, Packing | None]:
    """The summary, and the packing onto `partitions` (None when nothing can be drawn or partitions is None),
    with one_pass evened to whole images (kernels/balance.py): each read from the cache or computed and saved
    under the entry's lock (one process computes, the others read). Records seconds per step in timings and
    cache hits in hits."""
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
    if one_pass:
        packing = cached(
            "balance",
            lambda: entry.load_packing(partitions, one_pass=True),
            lambda: balance_counts(packing, partitions, lambda lo, hi: source.weights(lo, hi, summary.counts)),
            lambda v: entry.save_packing(partitions, v, one_pass=True),
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
    one_pass: bool = False,
) -> dict[str, Any]:
    """Fill the cache before a run: the summary (one O(N) pass) and, with partitions, the packing (one_pass: also
    evened to whole images), so the ranks of a large run only read them. Returns {"timings": seconds per step,
    "cache_hits": ...}."""
    source = sampling_source(dataset, vocab, sampling=sampling, combine=combine, eligible=eligible)
    entry = cache_entry(source, sampling)
    timings: dict[str, float] = {}
    hits: dict[str, bool] = {}
    load_layout(source, entry, partitions, timings, hits, one_pass=one_pass)
    return {"timings": timings, "cache_hits": hits}
