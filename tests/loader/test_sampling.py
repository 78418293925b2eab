"""RankSampler over a tiny on-disk dataset (manifest, vocabulary, mask; no shards needed to sample)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tagstream.loader.config import LoaderConfig
from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.vocab import Vocab, VocabClass, write_vocab
from tagstream.loader.data.writer import write_manifest
from tagstream.loader.sampling.sampler import RankSampler, eligibility

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # NUMBA_DISABLE_JIT=1 scalar wrap

SHARD_SIZES = [40, 0, 100, 20, 60]  # an empty shard; 4 non-empty ones
N = sum(SHARD_SIZES)
C = 6


def image_classes(i: int) -> list[int]:
    """Image i's classes, derived from i: none for i % 13 == 0, else 1-3 classes skewed to low ids."""
    if i % 13 == 0:
        return []
    first = (i * 7) % C if i % 3 else 0
    return sorted({first, (first + i % 2) % C, 0 if i % 5 == 0 else first})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    root = tmp_path_factory.mktemp("ds")
    shards = [{"name": fmt.shard_name(k), "images": n, "bytes": 0, "sha256": ""} for k, n in enumerate(SHARD_SIZES)]
    write_manifest(root, shards, tags=C, source={"kind": "test", "description": "index only, no shards"})
    ds = Dataset(root)
    rows = [image_classes(i) for i in range(N)]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    labels = np.array([c for r in rows for c in r], np.int32)
    counts = np.bincount(labels, minlength=C)
    classes = [VocabClass(c, f"class{c}", int(counts[c]), (f"tag{c}",)) for c in range(C)]
    write_vocab(ds, "v", classes, offsets, labels, options={}, report={})
    (root / fmt.MASKS_DIR).mkdir()
    np.save(root / fmt.MASKS_DIR / "dedup.npy", np.arange(N) % 10 == 1)
    return ds


@pytest.fixture(scope="module")
def vocab(dataset) -> Vocab:
    return Vocab(dataset, "v")


def test_eligibility_masks_and_holdout(dataset):
    assert eligibility(dataset).all()
    masked = eligibility(dataset, masks=("dedup",))
    assert np.array_equal(masked, np.arange(N) % 10 != 1)
    train = eligibility(dataset, masks=("dedup",), holdout_fraction=0.3, split="train")
    held = eligibility(dataset, masks=("dedup",), holdout_fraction=0.3, split="holdout")
    assert not (train & held).any() and np.array_equal(train | held, masked)
    assert 0.1 < held.sum() / masked.sum() < 0.5
    with pytest.raises(ValueError, match="split='test'"):
        eligibility(dataset, split="test")
    with pytest.raises(ValueError, match="no mask 'nope'"):
        eligibility(dataset, masks=("nope",))


@pytest.mark.parametrize(
    "masks, fraction, split",
    [
        ((), 0.0, "all"),
        (("dedup",), 0.0, "all"),
        ((), 0.3, "holdout"),
        (("dedup",), 0.3, "train"),
        (("dedup",), 0.3, "all"),
    ],
)
def test_eval_shares_found_chunk_by_chunk_equal_the_shares_of_the_whole_array(dataset, masks, fraction, split):
    """A rank's eval share without an array over all N images: the same indices, for any chunk and world."""
    from tagstream.loader.sampling.eligible import Eligibility, eval_share_of

    whole = np.flatnonzero(eligibility(dataset, masks=masks, holdout_fraction=fraction, split=split))
    rule = Eligibility(masks=masks, holdout_fraction=fraction, split=split)
    for world in (1, 3, 7, 300):
        shares = []
        for rank in range(world):
            for chunk in (7, 64, 1 << 24) if world < 300 else (64,):
                share, m = eval_share_of(dataset, rule, rank, world, chunk=chunk)
                assert m == whole.size and share.dtype == np.int64
                np.testing.assert_array_equal(share, whole[(rank * m) // world : ((rank + 1) * m) // world])
            shares.append(share)
        np.testing.assert_array_equal(np.concatenate(shares), whole)  # every eligible image once, in order


@pytest.mark.parametrize("most", [1, 5, 13, 10**6])
def test_a_bounded_evaluation_reads_evenly_spread_images_on_any_world(dataset, most):
    from tagstream.loader.sampling.eligible import Eligibility, eval_share_of, thin_eval_share

    rule = Eligibility(masks=("dedup",), holdout_fraction=0.3, split="holdout")
    whole = np.flatnonzero(eligibility(dataset, masks=("dedup",), holdout_fraction=0.3, split="holdout"))
    expected = whole[(np.arange(most) * whole.size) // most] if whole.size > most else whole
    assert expected.size == min(most, whole.size) and np.unique(expected).size == expected.size
    for world in (1, 2, 3, 7):
        parts = []
        for rank in range(world):
            share, m = eval_share_of(dataset, rule, rank, world)
            parts.append(thin_eval_share(share, m, rank, world, most))
        np.testing.assert_array_equal(np.concatenate([p for p, _ in parts]), expected)  # the same images
        assert {largest for _, largest in parts} == {max(p.size for p, _ in parts)}


@pytest.mark.parametrize("world", [1, 2, 4, 7])  # 7 ranks over 4 non-empty shards
@pytest.mark.parametrize("sampling,replacement", [("sqrt", True), ("natural", False), ("uniform", True)])
def test_ranks_plan_equal_lengths_from_their_own_blocks(dataset, vocab, world, sampling, replacement):
    ok = eligibility(dataset, masks=("dedup",))
    samplers = [
        RankSampler(
            dataset, vocab, sampling=sampling, eligible=ok, seed=3, rank=r, world=world, replacement=replacement
        )
        for r in range(world)
    ]
    lengths = {len(s) for s in samplers}
    assert lengths == {samplers[0].num_drawable // world}
    seen = []
    for s in samplers:
        plan = s.plan(0)
        inside = np.zeros(N, bool)
        for lo, hi in s.owned_ranges():
            inside[lo:hi] = True
        assert inside[plan].all() and ok[plan].all() and np.all(s.image_weights()[plan] > 0)
        assert np.array_equal(s.plan(0, start=5, stop=9), plan[5:9]) and not np.array_equal(s.plan(1), plan)
        seen.append(set(plan.tolist()))
        assert s.imbalance == samplers[0].imbalance and s.imbalance >= 0
    assert all(not (seen[i] & seen[j]) for i in range(world) for j in range(i))
    # blocks never straddle shards, and every block has exactly one owner
    assert set(dataset.shard_starts.tolist()) <= set(samplers[0].block_starts.tolist())
    owned = np.concatenate([s.owned_blocks for s in samplers])
    assert np.array_equal(np.sort(owned), np.arange(len(samplers[0].owner)))


def test_without_replacement_one_rank_is_a_permutation(dataset, vocab):
    s = RankSampler(dataset, vocab, sampling="natural", replacement=False, seed=1)
    drawable = np.flatnonzero(s.image_weights() > 0)
    assert np.array_equal(np.sort(s.plan(0)), drawable)
    assert np.array_equal(drawable, np.flatnonzero(np.diff(vocab.label_offsets) > 0))


def test_expected_class_draws_match_observed(dataset, vocab):
    """Multi-label: each class's draw count is a sum of per-rank binomials, so |obs - exp| <= 5 sd."""
    world, samples = 3, 60_000
    observed = np.zeros(C)
    for r in range(world):
        s = RankSampler(dataset, vocab, sampling="sqrt", seed=2, rank=r, world=world, samples_per_epoch=samples)
        plan = s.plan(0)
        for i in plan:
            observed[image_classes(int(i))] += 1
    expected = s.expected_class_draws()
    assert np.all(np.abs(observed - expected) <= 5 * np.sqrt(expected) + 1)
    ideal = s.expected_class_draws(ideal=True)
    np.testing.assert_allclose(ideal, expected, rtol=0.05)  # packing error is small, not zero
    # the formula: each draw lands on image i w.p. w_i / W, and carries its classes
    weights = s.image_weights()
    per_image = weights / weights.sum() * samples
    by_hand = np.array([sum(per_image[i] for i in range(N) if c in image_classes(i)) for c in range(C)])
    np.testing.assert_allclose(ideal, by_hand, rtol=1e-9)


def test_from_config_applies_masks_holdout_and_seed(dataset, vocab):
    cfg = LoaderConfig(
        dataset=str(dataset.root),
        vocab="v",
        masks=("dedup",),
        holdout_fraction=0.25,
        split="train",
        seed=9,
        samples_per_epoch=64,
    )
    s = RankSampler.from_config(cfg, dataset, vocab, rank=1, world=2)
    held = eligibility(dataset, holdout_fraction=0.25, split="holdout")
    plan = s.plan(4)
    assert len(plan) == 32 and not held[plan].any() and np.all(np.arange(N)[plan] % 10 != 1)
    again = RankSampler.from_config(cfg, dataset, vocab, rank=1, world=2)
    assert np.array_equal(again.plan(4), plan)


def test_bad_arguments_are_clear_errors(dataset, vocab):
    with pytest.raises(ValueError, match="replacement=False needs sampling='natural'"):
        RankSampler(dataset, vocab, sampling="sqrt", replacement=False)
    with pytest.raises(ValueError, match="rank=2 must be in"):
        RankSampler(dataset, vocab, rank=2, world=2)
    with pytest.raises(ValueError, match="combine='median'"):
        RankSampler(dataset, vocab, combine="median")
    with pytest.raises(ValueError, match="no image can be drawn"):
        RankSampler(dataset, vocab, eligible=np.zeros(N, bool))
    with pytest.raises(ValueError, match="samples_per_epoch=3 must be >= partitions=4"):
        RankSampler(dataset, vocab, world=4, samples_per_epoch=3)
    few = np.zeros(N, bool)
    few[[1, 2]] = True  # two drawable images in one shard, three ranks
    for rank in range(3):  # every rank refuses, not only the empty one: none is left waiting
        with pytest.raises(ValueError, match=r"partitions \[\d\] of 3 \(world=3\) own no image"):
            RankSampler(dataset, vocab, eligible=few, rank=rank, world=3, samples_per_epoch=30)


RANK_SCRIPT = """
import datetime, json, sys
import json

import numpy as np
import torch
import torch.distributed as dist
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.sampling.sampler import RankSampler, eligibility
from tagstream.loader.data.vocab import Vocab

root, rank, world, init, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
ds = Dataset(root)
s = RankSampler(ds, Vocab(ds, "v"), sampling="sqrt", eligible=eligibility(ds, masks=("dedup",)), seed=4, rank=rank, world=world)
steps = torch.zeros(1)
for i in s.plan(0):  # one all_reduce per sample: a rank with a shorter plan would leave the others waiting
    dist.all_reduce(steps)
layouts = [None] * world
dist.all_gather_object(layouts, (s.block_starts.tolist(), s.owner.tolist()))
json.dump({"plan": s.plan(0).tolist(), "same_layout": all(x == layouts[0] for x in layouts)}, open(out, "w"))
dist.destroy_process_group()
"""


def test_ranks_in_separate_processes_agree_and_finish_their_collectives(dataset, tmp_path):
    """Each rank builds its sampler alone, in its own process (own hash seed): layouts agree, every
    rank makes the same number of collective calls, and together they match the in-process samplers."""
    import os
    import subprocess
    import sys

    world = 3
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RANK_SCRIPT,
                str(dataset.root),
                str(r),
                str(world),
                init,
                str(tmp_path / f"r{r}.json"),
            ],
            env={**os.environ, "PYTHONHASHSEED": str(r + 1)},
        )
        for r in range(world)
    ]
    try:
        codes = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0] * world
    results = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(world)]
    assert all(r["same_layout"] for r in results)
    vocab = Vocab(dataset, "v")
    ok = eligibility(dataset, masks=("dedup",))
    for r, res in enumerate(results):
        here = RankSampler(dataset, vocab, sampling="sqrt", eligible=ok, seed=4, rank=r, world=world)
        assert res["plan"] == here.plan(0).tolist()
