"""One-pass epochs (LoaderConfig(one_pass=True), natural sampling): every drawable image exactly once an epoch over
all ranks, on uneven shards with masks and a held-out split, at 1, 2, 3 and 4 ranks and with several partitions a
rank; the last global batch filled up (default) or dropped; exact resume at a random batch; elastic 4 -> 2 -> 1;
the refusals; and through the real loader on CPU, the batches it yields are len(loader) and each image once."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tagstream.kernels.assign import pack_shards
from tagstream.loader.config import LoaderConfig
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.iterator import DaliLoader
from tagstream.loader.sampling.sampler import eligibility
from tagstream.tools.bench.loader_data import encode_jpeg, write_dataset, write_identity_vocab
from tests.helpers.index_only import image_classes, write_index_only

MASKED = dict(masks=("dedup", "other"), holdout_fraction=0.2, split="train")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(write_index_only(tmp_path_factory.mktemp("one_pass")).root)  # shards 500, 0, 1200, 37, 800, 463


SMALL_SHARDS = (71, 0, 63, 56, 18)  # packed by weight alone, 4 partitions hold drawable images 2 apart


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> str:
    root = str(write_index_only(tmp_path_factory.mktemp("one_pass_small"), shard_sizes=SMALL_SHARDS).root)
    drawable = np.zeros(sum(SMALL_SHARDS))
    drawable[sorted(_drawable(root))] = 1.0
    plain = pack_shards(np.concatenate([[0], np.cumsum(SMALL_SHARDS)]), drawable, 4)
    held = np.bincount(plain.owner, weights=plain.block_weights, minlength=4)
    assert held.max() - held.min() >= 2  # so a one-pass epoch needs the packing evened (kernels/balance.py)
    return root


def _drawable(root: str) -> set[int]:
    """The images one pass must visit, computed from the helpers' rules: eligible and carrying a class."""
    ok = eligibility(Dataset(root), **MASKED)
    return {i for i in np.flatnonzero(ok).tolist() if image_classes(i)}


def _config(root: str, **kw) -> LoaderConfig:
    return LoaderConfig(dataset=root, vocab="v", sampling="natural", one_pass=True, seed=4, **MASKED, **kw)


def _global_batches(loaders: list[DaliLoader], epoch: int, steps: range) -> list[list[int]]:
    """Global batches `steps` of the epoch, each the sorted multiset of its images over all ranks."""
    out = []
    for s in steps:
        parts = [x.sampler.plan(epoch, s * x.config.batch_size, (s + 1) * x.config.batch_size) for x in loaders]
        out.append(sorted(np.concatenate(parts).tolist()))
    return out


LAYOUTS = [(1, None, 16), (2, None, 8), (3, None, 7), (4, None, 7), (2, 4, 6), (3, 6, 4)]  # world, partitions, batch


@pytest.mark.parametrize("drop_last", [False, True], ids=["padded", "dropped"])
@pytest.mark.parametrize("world,partitions,batch", LAYOUTS)
@pytest.mark.parametrize("data", ["root", "small_root"])
def test_every_image_exactly_once_an_epoch_over_all_ranks(request, data, world, partitions, batch, drop_last):
    root = request.getfixturevalue(data)
    drawable = _drawable(root)
    config = _config(root, batch_size=batch, partitions=partitions, drop_last=drop_last)
    loaders = [DaliLoader(config, rank, world) for rank in range(world)]
    steps = len(loaders[0])
    global_batch = batch * world
    full, rest = divmod(len(drawable), global_batch)
    assert {len(x) for x in loaders} == {steps} and steps == full + (1 if rest and not drop_last else 0)
    sampler = loaders[0].sampler
    for epoch in (0, 5):
        batches = _global_batches(loaders, epoch, range(steps))
        assert all(len(b) == global_batch for b in batches)
        seen = Counter(i for b in batches for i in b)
        before_last = Counter(i for b in batches[:-1] for i in b)
        assert max(before_last.values()) == 1 and set(seen) <= drawable
        if drop_last:
            assert max(seen.values()) == 1 and len(drawable - set(seen)) == sampler.dropped == rest
        else:  # the last batch is filled up with images already seen this epoch
            assert set(seen) == drawable and sum(seen.values()) - len(seen) == sampler.padded
            assert sampler.padded == (global_batch - rest if rest else 0)
    assert _global_batches(loaders, 0, range(2)) != _global_batches(loaders, 1, range(2))  # a new order each epoch


def test_resumed_at_a_random_batch_the_epoch_is_still_one_pass(root):
    drawable = _drawable(root)
    config = _config(root, batch_size=9, partitions=3)
    loaders = [DaliLoader(config, rank, 3) for rank in range(3)]
    steps = len(loaders[0])
    at = int(np.random.default_rng().integers(1, steps))  # any batch: the guarantee holds at each
    for x in loaders:
        x.set_epoch(2)
        x.step = at  # as if it had yielded `at` batches
    state = loaders[1].state_dict()
    assert state["one_pass"] is True and state["step"] == at
    resumed = [DaliLoader(config, rank, 3) for rank in range(3)]
    for x in resumed:
        x.load_state_dict(state)
    assert resumed[0].sampler.cache_hits == {"summary": True, "packing": True, "balance": True}  # the evened packing
    head = _global_batches(loaders, 2, range(at))
    tail = _global_batches(resumed, 2, range(at, steps))
    assert tail == _global_batches(loaders, 2, range(at, steps)), at
    seen = Counter(i for b in head + tail for i in b)
    assert set(seen) == drawable and sum(seen.values()) - len(seen) == loaders[0].sampler.padded
    plain = DaliLoader(LoaderConfig(dataset=root, vocab="v", sampling="natural", seed=4, batch_size=9), 0, 3)
    with pytest.raises(ValueError, match="one_pass=True but this loader has one_pass=False"):
        plain.load_state_dict({**state, "batches": plain.batches})


def test_elastic_resume_from_4_ranks_onto_2_and_1(root):
    drawable = _drawable(root)

    def loaders(world: int) -> list[DaliLoader]:
        config = _config(root, batch_size=24 // world, partitions=4)
        return [DaliLoader(config, rank, world) for rank in range(world)]

    four = loaders(4)
    steps, at = len(four[0]), 17
    for x in four:
        x.set_epoch(1)
        x.step = at
    state = four[0].state_dict()
    expected = _global_batches(four, 1, range(at, steps))
    head = _global_batches(four, 1, range(at))
    for world in (2, 1):
        resumed = loaders(world)
        assert {len(x) for x in resumed} == {steps}
        for x in resumed:
            x.load_state_dict(state)
        tail = _global_batches(resumed, 1, range(at, steps))
        assert tail == expected, world
        seen = Counter(i for b in head + tail for i in b)
        assert set(seen) == drawable and sum(seen.values()) - len(seen) == four[0].sampler.padded


@pytest.mark.parametrize("sampling", ["sqrt", "uniform", "power:0.3"])
def test_one_pass_is_refused_for_laws_over_draws(root, sampling):
    with pytest.raises(ValueError, match=rf"^one_pass=True needs sampling='natural', got '{sampling}'[^\n]*$"):
        LoaderConfig(dataset=root, vocab="v", sampling=sampling, one_pass=True)


def test_settings_that_do_not_fit_one_pass_are_refused(root):
    with pytest.raises(ValueError, match=r"^samples_per_epoch=100 cannot be set with one_pass=True[^\n]*$"):
        LoaderConfig(dataset=root, vocab="v", sampling="natural", one_pass=True, samples_per_epoch=100)
    with pytest.raises(ValueError, match=r"^drop_last=True applies to one_pass=True epochs[^\n]*$"):
        LoaderConfig(dataset=root, vocab="v", sampling="natural", drop_last=True)
    with pytest.raises(ValueError, match=r"^one_pass='yes' must be true or false$"):
        LoaderConfig(dataset=root, vocab="v", sampling="natural", one_pass="yes")
    huge = _config(root, batch_size=5000, drop_last=True)
    with pytest.raises(ValueError, match=r"^drop_last=True leaves no batch: \d+ drawable images are fewer than one"):
        DaliLoader(huge, 0, 1)
    assert len(DaliLoader(_config(root, batch_size=5000), 0, 1)) == 1  # padded: one batch, every image in it


def _pattern(index: int) -> np.ndarray:
    return np.full((24 + index % 5, 32, 3), (5 * index) % 256, np.uint8)


def test_the_real_loader_yields_len_batches_and_each_image_once_over_two_ranks(tmp_path):
    records = ((encode_jpeg(_pattern(i), quality=95), [i % 3], 32, 24 + i % 5) for i in range(37))
    ds = write_dataset(tmp_path / "ds", records, num_images=37, shard_size=10, num_tags=3)  # shards 10, 10, 10, 7
    write_identity_vocab(ds, "v")
    config = LoaderConfig(
        dataset=str(ds.root),
        vocab="v",
        sampling="natural",
        one_pass=True,
        batch_size=4,
        image_size=16,
        workers=0,
        threads=1,
        prefetch=1,
    )
    seen: Counter = Counter()
    for rank in range(2):
        loader = DaliLoader(config, rank, 2)
        loader.set_epoch(3)
        batches = [b.indices.tolist() for b in loader]
        assert len(batches) == len(loader) == 5 and all(len(b) == 4 for b in batches)  # 37 images: 5 batches of 8
        seen.update(i for b in batches for i in b)
        loader.close()
    assert set(seen) == set(range(37)) and sum(seen.values()) == 40  # 3 repeats fill the last global batch
