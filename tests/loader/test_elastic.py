"""Elastic resume: the global batches are a function of (seed, epoch, step, partitions), not of the world size.

A loader checkpointed at step s at world 4 and resumed at world 2 or 1 (partitions=4) delivers the same
global batches (as multisets of image indices) as the uninterrupted world-4 run, with the same crop windows,
flips and pixels (augmentation is keyed by partition, loader/sampling/partitions.py partition_positions); other world sizes and
other layouts are refused with messages that name what works. The sqrt law holds at world 3 and 7.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tagstream.loader.config import LoaderConfig
from tagstream.loader.iterator import DaliLoader
from tagstream.loader.pipeline.augment import train_params
from tagstream.loader.pipeline.batch_source import BatchPlan
from tagstream.loader.sampling.partitions import partition_position, partition_positions
from tagstream.loader.sampling.sampler import RankSampler
from tagstream.tools.bench.loader_data import encode_jpeg, write_dataset, write_identity_vocab
from tests.helpers.index_only import NUM_CLASSES, write_index_only, zipf_class
from tests.helpers.stats import ALPHA, chi2_fit

GLOBAL_BATCH = 24
EPOCH, STEP, STEPS = 2, 5, 4


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(write_index_only(tmp_path_factory.mktemp("elastic")).root)


def _loaders(config: LoaderConfig, world: int) -> list[DaliLoader]:
    return [DaliLoader(config, rank=r, world=world) for r in range(world)]


def _global_batches(loaders: list[DaliLoader], steps: int) -> list[list[int]]:
    """The next `steps` global batches from where the loaders stand, each sorted (a multiset)."""
    out = []
    for t in range(steps):
        parts = []
        for loader in loaders:
            b = loader.config.batch_size
            at = loader.step + t
            parts.append(loader.sampler.plan(loader.epoch, at * b, (at + 1) * b))
        out.append(sorted(np.concatenate(parts).tolist()))
    return out


SETTINGS = [
    dict(sampling="sqrt"),
    dict(sampling="uniform", combine="max", masks=("dedup",), holdout_fraction=0.2, split="train"),
    dict(sampling="natural", masks=("dedup", "other"), samples_per_epoch=1500),
    dict(sampling="power:0.3", combine="mean", holdout_fraction=0.3, split="holdout"),
]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s["sampling"])
def test_resumed_at_world_2_and_1_the_global_batches_are_the_uninterrupted_ones(root, setting):
    def config(world: int) -> LoaderConfig:
        return LoaderConfig(dataset=root, vocab="v", seed=7, batch_size=GLOBAL_BATCH // world, partitions=4, **setting)

    uninterrupted = _loaders(config(4), 4)
    for loader in uninterrupted:
        loader.set_epoch(EPOCH)
    expected = _global_batches(uninterrupted, STEP + STEPS)[STEP:]
    for loader in uninterrupted:
        loader.step = STEP  # as if it had yielded STEP batches
    state = uninterrupted[0].state_dict()
    assert state["partitions"] == 4 and state["global_batch"] == GLOBAL_BATCH and state["world"] == 4
    for world in (2, 1):
        resumed = _loaders(config(world), world)
        assert {len(x) for x in resumed} == {len(uninterrupted[0])}  # the same steps per epoch
        for loader in resumed:
            loader.load_state_dict(state)
        assert _global_batches(resumed, STEPS) == expected, world
        assert [x.state_dict()["step"] for x in resumed] == [STEP] * world


def test_partitions_equal_to_world_is_the_plan_of_one_partition_per_rank(root):
    """partitions = world (the default) is exactly the per-rank plan: the pinned plans hold for the loader."""
    default = LoaderConfig(dataset=root, vocab="v", seed=3, batch_size=6)
    explicit = LoaderConfig(dataset=root, vocab="v", seed=3, batch_size=6, partitions=3)
    for rank in range(3):
        a = RankSampler.from_config(
            default, DaliLoader(default, rank, 3).dataset, DaliLoader(default, rank, 3).vocab, rank=rank, world=3
        )
        b = DaliLoader(explicit, rank, 3).sampler
        assert np.array_equal(a.plan(1), b.plan(1)) and a.served == b.served == range(rank, rank + 1)


def test_a_rank_serving_several_partitions_lays_their_shares_end_to_end(root):
    config = LoaderConfig(dataset=root, vocab="v", seed=5, batch_size=12, partitions=6)
    rank1 = DaliLoader(config, rank=1, world=2).sampler  # partitions 3, 4, 5; share 4 each
    assert rank1.served == range(3, 6) and rank1.share == 4
    one = LoaderConfig(dataset=root, vocab="v", seed=5, batch_size=4, partitions=6)
    alone = [DaliLoader(one, rank=p, world=6).sampler for p in range(3, 6)]
    plan = rank1.plan(0, 12 * 3, 12 * 5)  # steps 3 and 4
    for step in (0, 1):
        for q in range(3):
            got = plan[step * 12 + q * 4 : step * 12 + (q + 1) * 4]
            assert np.array_equal(got, alone[q].plan(0, (3 + step) * 4, (4 + step) * 4))


def test_refusals_name_what_works(root):
    def config(**kw) -> LoaderConfig:
        return LoaderConfig(dataset=root, vocab="v", **{"batch_size": 8, "partitions": 4, **kw})

    with pytest.raises(ValueError, match=r"world size 3 does not divide partitions=4 .*world sizes that work: 1, 2, 4"):
        DaliLoader(config(), rank=0, world=3)
    with pytest.raises(
        ValueError,
        match=r"batch_size=5 per rank cannot be shared by the 2 partitions .* global batch 10 must be a multiple of 4",
    ):
        DaliLoader(config(batch_size=5), rank=0, world=2)
    with pytest.raises(ValueError, match=r"partitions=0 must be a whole number in \[1, "):
        config(partitions=0)
    state = DaliLoader(config(), rank=0, world=2).state_dict()
    other = DaliLoader(config(partitions=2, batch_size=16), rank=0, world=1)
    with pytest.raises(
        ValueError, match=r"partitions=4 but this loader has partitions=2: build the loader with partitions=4"
    ):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match=r"global_batch=16 but this loader has global_batch=8"):
        DaliLoader(config(batch_size=8), rank=0, world=1).load_state_dict(state)
    with pytest.raises(ValueError, match=r"seed=0 but this loader has seed=1"):
        DaliLoader(config(batch_size=16, seed=1), rank=0, world=1).load_state_dict(state)
    # a state written before partitions existed: one partition per rank of its world
    before = DaliLoader(config(partitions=None), rank=1, world=2).state_dict()
    old = {k: before[k] for k in ("epoch", "step", "mode", "seed", "batch_size", "rank", "world", "batches")}
    with pytest.raises(ValueError, match=r"partitions=2 but this loader has partitions=4: .* dividing it \(1, 2\)"):
        DaliLoader(config(batch_size=16), rank=0, world=1).load_state_dict(old)
    resumed = DaliLoader(config(batch_size=16, partitions=2), rank=0, world=1)
    resumed.load_state_dict({**old, "step": 3})
    assert resumed.step == 3


@pytest.mark.parametrize("world,partitions", [(3, 3), (7, 7), (3, 6)])
def test_sqrt_law_per_class_at_world_3_and_7_with_uneven_shards(tmp_path_factory, world, partitions):
    """Single-label images over uneven shards (an empty one, a tiny one): drawn class frequencies, all ranks
    together, fit n_c^0.5 / sum_d n_d^0.5 by chi-square (the packing error is ~1e-3, far below the noise)."""
    sizes = (700, 0, 2300, 13, 1100, 887)
    ds = write_index_only(tmp_path_factory.mktemp(f"law{world}"), shard_sizes=sizes, classes_of=zipf_class)
    n = np.bincount([zipf_class(i)[0] for i in range(sum(sizes))], minlength=NUM_CLASSES).astype(float)
    samples = 84_000
    config = LoaderConfig(
        dataset=str(ds.root),
        vocab="v",
        seed=13,
        batch_size=partitions // world,
        samples_per_epoch=samples,
        partitions=partitions,
    )
    observed = np.zeros(NUM_CLASSES)
    drawn = 0
    for rank in range(world):
        plan = DaliLoader(config, rank=rank, world=world).sampler.plan(0)
        observed += np.bincount([zipf_class(int(i))[0] for i in plan], minlength=NUM_CLASSES)
        drawn += len(plan)
    assert drawn == samples // partitions * partitions
    law = np.sqrt(n) / np.sqrt(n).sum()
    assert chi2_fit(observed, drawn * law)[2] > ALPHA
    natural = n / n.sum()  # the test can tell the sqrt law from the natural one
    assert chi2_fit(observed, drawn * natural)[2] < ALPHA


def test_a_samples_augmentation_key_is_its_partition_and_its_position_there(root):
    """partition_positions maps position j of a rank's plan to (partition, position in that partition's plan): the
    sample at j is the one the partition draws there, at every world size; one partition per rank: (rank, j)."""
    alone = [
        DaliLoader(LoaderConfig(dataset=root, vocab="v", seed=5, batch_size=3, partitions=6), rank=p, world=6).sampler
        for p in range(6)
    ]
    for world in (1, 2, 3, 6):
        config = LoaderConfig(dataset=root, vocab="v", seed=5, batch_size=18 // world, partitions=6)
        for rank in range(world):
            sampler = DaliLoader(config, rank=rank, world=world).sampler
            serves, n = 6 // world, len(sampler)
            parts, pos = partition_positions(rank, serves, sampler.share, 0, n)
            assert [partition_position(rank, serves, sampler.share, j) for j in range(n)] == list(
                zip(parts.tolist(), pos.tolist())
            )
            if serves == 1:
                assert (parts == rank).all() and np.array_equal(pos, np.arange(n))
            plan = sampler.plan(1)
            for p in sampler.served:
                sel = parts == p
                assert np.array_equal(np.sort(pos[sel]), np.arange(n // serves))  # each position of p once
                assert np.array_equal(plan[sel], alone[p].plan(1)[pos[sel]]), (world, rank, p)


def _gradient(index: int, w: int, h: int) -> np.ndarray:
    """Gradients in x and y, the index in blue: another window, flip or image shows in the pixels."""
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return np.stack([x, y, np.full_like(x, 5 * index % 256)], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def pattern_root(tmp_path_factory) -> str:
    dims = [(40 + 9 * (i % 5), 36 + 7 * (i % 6)) for i in range(40)]
    records = ((encode_jpeg(_gradient(i, w, h), quality=95), [i % 4], w, h) for i, (w, h) in enumerate(dims))
    ds = write_dataset(tmp_path_factory.mktemp("pattern") / "ds", records, num_images=40, shard_size=10, num_tags=4)
    write_identity_vocab(ds, "v")
    return str(ds.root)


def _source_triples(loader: DaliLoader, start: int, n: int) -> list[tuple[int, ...]]:
    """(index, x, y, w, h, flip) of positions [start, start + n) of the loader's plan, as the source feeding
    its pipeline computes them (a batch source: DecodedBatchSource on the turbo path, BatchSource on the dali one)."""
    source, epoch = loader.source, loader.epoch
    indices = loader.sampler.plan(epoch, start, start + n)
    assert isinstance(source, BatchPlan)
    widths, heights = source.sizes(indices)
    return [(int(i), *map(int, row)) for i, row in zip(indices, source.windows(epoch, start, widths, heights))]


def _size(loader: DaliLoader, index: int) -> tuple[int, int]:
    shard, local = loader.dataset.locate(np.array([index]))
    return tuple(int(loader.dataset.index_array(int(shard[0]), k)[local[0]]) for k in ("width", "height"))


def _augmented_batches(loaders: list[DaliLoader], steps: int) -> list[list[tuple]]:
    """The next `steps` global batches the loaders yield, each the sorted multiset of (index, x, y, w, h, flip,
    digest of the pixels): the window and flip from each loader's source, index and pixels from the loader."""
    iters = [iter(loader) for loader in loaders]
    out = []
    for _ in range(steps):
        rows = []
        for loader, it in zip(loaders, iters):
            b, start = loader.config.batch_size, loader.step * loader.config.batch_size
            batch = next(it)
            triples = _source_triples(loader, start, b)
            assert [t[0] for t in triples] == batch.indices.tolist()
            rows += [(*t, hashlib.sha1(image.tobytes()).hexdigest()) for t, image in zip(triples, batch.images.numpy())]
        out.append(sorted(rows))
    return out


def test_resumed_at_world_2_and_1_the_crops_flips_and_pixels_are_the_uninterrupted_ones(pattern_root):
    """Through the real loader on CPU, both decode placements (turbo: DecodedBatchSource in the workers; dali: BatchSource):
    checkpointed at step 3 at world 4, resumed at world 2 and 1, steps 3..5 give the same (index, window, flip,
    pixels) per global batch as the uninterrupted run; both placements draw the same windows."""
    start, steps = 3, 3
    windows = {}
    for decoder in ("turbo", "dali"):
        config = dict(
            dataset=pattern_root,
            vocab="v",
            seed=9,
            partitions=4,
            image_size=16,
            samples_per_epoch=96,
            workers=0,
            threads=1,
            prefetch=1,
            cpu_decoder=decoder,
        )
        uninterrupted = _loaders(LoaderConfig(**config, batch_size=2), 4)
        for loader in uninterrupted:
            loader.set_epoch(1)
        _augmented_batches(uninterrupted, start)
        state = uninterrupted[0].state_dict()
        assert state["step"] == start and state["world"] == 4
        expected = _augmented_batches(uninterrupted, steps)
        for loader in uninterrupted:
            loader.close()
        for world in (2, 1):
            resumed = _loaders(LoaderConfig(**config, batch_size=8 // world), world)
            for loader in resumed:
                loader.load_state_dict(state)
            got = _augmented_batches(resumed, steps)
            assert got == expected, (decoder, world)
            if world == 2:  # keyed by (rank, position in the rank's plan), as before, these windows would differ
                rank1, at = resumed[1], start * 4
                ours = _source_triples(rank1, at, 4)
                by_rank = [
                    train_params(*_size(rank1, t[0]), seed=9, epoch=1, rank=1, position=at + k)
                    for k, t in enumerate(ours)
                ]
                assert all(t[1:] != (*w, int(f)) for t, (w, f) in zip(ours, by_rank))
            for loader in resumed:
                loader.close()
        windows[decoder] = [[row[:6] for row in batch] for batch in expected]
    assert windows["turbo"] == windows["dali"]
