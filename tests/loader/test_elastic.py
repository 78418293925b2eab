"""Elastic resume: the global batches are a function of (seed, epoch, step, partitions), not of the world size.

A loader checkpointed at step s at world 4 and resumed at world 2 or 1 (partitions=4) delivers the same
global batches (as multisets of image indices) as the uninterrupted world-4 run; other world sizes and
other layouts are refused with messages that name what works. The sqrt law holds at world 3 and 7.
"""

from __future__ import annotations

import numpy as np
import pytest
from tagstream.loader.config import LoaderConfig
from tagstream.loader.iterator import DaliLoader
from tagstream.loader.sampling import RankSampler

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
        a = RankSampler.from_config(default, DaliLoader(default, rank, 3).dataset, DaliLoader(default, rank, 3).vocab, rank=rank, world=3)
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
    with pytest.raises(ValueError, match=r"batch_size=5 per rank cannot be shared by the 2 partitions .* global batch 10 must be a multiple of 4"):
        DaliLoader(config(batch_size=5), rank=0, world=2)
    with pytest.raises(ValueError, match=r"partitions=0 must be an integer >= 1"):
        config(partitions=0)
    state = DaliLoader(config(), rank=0, world=2).state_dict()
    other = DaliLoader(config(partitions=2, batch_size=16), rank=0, world=1)
    with pytest.raises(ValueError, match=r"partitions=4 but this loader has partitions=2: build the loader with partitions=4"):
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
    config = LoaderConfig(dataset=str(ds.root), vocab="v", seed=13, batch_size=partitions // world, samples_per_epoch=samples, partitions=partitions)
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
