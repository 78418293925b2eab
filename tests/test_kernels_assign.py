"""Blocks and LPT assignment: twin equality, deterministic ties, split blocks refine shards, balance."""

from __future__ import annotations

import numpy as np
import pytest

from tagstream.kernels.assign import assign_blocks, assign_blocks_ref, block_weights, rank_loads, split_blocks


@pytest.mark.parametrize("world", [1, 3, 64])
@pytest.mark.parametrize("seed", [0, 1])
def test_assignment_matches_twin(world, seed):
    bw = np.random.default_rng(seed).pareto(1.5, 300)
    owner, imb = assign_blocks(bw, world)
    ref_owner, ref_imb = assign_blocks_ref(bw, world)
    assert np.array_equal(owner, ref_owner) and imb == pytest.approx(ref_imb, rel=1e-12)
    loads = rank_loads(bw, owner, world)
    assert imb == pytest.approx(loads.max() / loads.mean() - 1, rel=1e-12)
    # LPT bound: the heaviest rank exceeds the mean by at most one block
    assert loads.max() <= loads.mean() + bw.max() + 1e-9


def test_ties_are_deterministic_and_spread():
    owner, imb = assign_blocks(np.ones(8), 4)
    assert owner.tolist() == [0, 1, 2, 3, 0, 1, 2, 3] and imb == 0.0


def test_more_ranks_than_blocks_reports_the_imbalance():
    owner, imb = assign_blocks(np.array([3.0, 1.0]), 4)
    assert owner.tolist() == [0, 1]
    assert imb == pytest.approx(3.0 / 1.0 - 1)  # loads [3, 1, 0, 0], mean 1
    assert assign_blocks(np.zeros(3), 2)[1] == 0.0


@pytest.mark.parametrize("bad", [np.array([1.0, -1.0]), np.array([np.nan])])
def test_assignment_rejects_bad_weights(bad):
    with pytest.raises(ValueError, match="finite values >= 0"):
        assign_blocks(bad, 2)
    with pytest.raises(ValueError, match="world=0"):
        assign_blocks(np.ones(2), 0)


def test_split_refines_shards_and_balances_few_shards():
    w = np.random.default_rng(3).random(1000)
    shards = np.array([0, 0, 10, 990, 1000], np.int64)  # an empty shard, a tiny one, a huge one
    blocks = split_blocks(shards, w, 8)
    assert blocks[0] == 0 and blocks[-1] == 1000 and np.all(np.diff(blocks) >= 0)
    assert set(shards.tolist()) <= set(blocks.tolist())  # blocks never straddle a shard boundary
    bw = block_weights(blocks, w)
    np.testing.assert_allclose(bw.sum(), w.sum())
    assert bw.max() <= 2 * w.sum() / (8 * 8)
    owner, imb = assign_blocks(bw, 8)
    assert np.all(rank_loads(bw, owner, 8) > 0) and imb < 0.1


def test_split_keeps_light_shards_whole():
    w = np.ones(1000)
    shards = np.arange(0, 1001, 10, dtype=np.int64)  # 100 equal shards, 4 ranks: no shard is too heavy
    assert np.array_equal(split_blocks(shards, w, 4), shards)


def test_block_weights_edge_cases():
    w = np.array([1.0, 2.0, 3.0])
    assert block_weights(np.array([0, 0, 2, 2, 3]), w).tolist() == [0.0, 3.0, 0.0, 3.0]
    assert block_weights(np.array([0, 0]), np.zeros(0)).tolist() == [0.0]
    assert np.array_equal(split_blocks(np.array([0, 3]), np.zeros(3), 4), [0, 3])  # nothing to balance


def test_split_rejects_mismatched_shards():
    with pytest.raises(ValueError, match="shard_starts end at 5"):
        split_blocks(np.array([0, 5]), np.ones(3), 2)
    with pytest.raises(ValueError, match="non-decreasing"):
        split_blocks(np.array([0, 2, 1, 3]), np.ones(3), 2)


def test_64_ranks_over_1000_shards():
    r = np.random.default_rng(4)
    sizes = r.integers(50, 150, 1000)
    w = r.random(int(sizes.sum())) ** 2
    shards = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    bw = block_weights(split_blocks(shards, w, 64), w)
    assert len(bw) == 1000  # no shard is heavy enough to split: ranks read whole shards
    _, lpt_only = assign_blocks(bw, 64, refine=False)
    owner, imb = assign_blocks(bw, 64)
    assert 0.001 < lpt_only < 0.05 and imb < 1e-3  # refinement matters at ~16 shards per rank
    assert np.array_equal(owner, assign_blocks_ref(bw, 64)[0])


def test_refinement_matches_twin_on_uneven_blocks():
    bw = np.random.default_rng(6).integers(1, 40, 60).astype(float)
    for world in (2, 7):
        owner, imb = assign_blocks(bw, world)
        ref_owner, ref_imb = assign_blocks_ref(bw, world)
        assert np.array_equal(owner, ref_owner) and imb == pytest.approx(ref_imb)
        assert imb <= assign_blocks(bw, world, refine=False)[1]
