"""Shard packing: LPT + refinement vs its twin, deterministic ties, cuts that refine shards and balance."""

from __future__ import annotations

import numpy as np
import pytest

from tagstream.kernels import assign
from tagstream.kernels.assign import assign_blocks, assign_blocks_ref, block_weights, pack_shards, partition_loads


@pytest.mark.parametrize("partitions", [1, 3, 64])
@pytest.mark.parametrize("seed", [0, 1])
def test_assignment_matches_twin(partitions, seed):
    bw = np.random.default_rng(seed).pareto(1.5, 300)
    owner, imb = assign_blocks(bw, partitions)
    ref_owner, ref_imb = assign_blocks_ref(bw, partitions)
    assert np.array_equal(owner, ref_owner) and imb == pytest.approx(ref_imb, rel=1e-12)
    loads = partition_loads(bw, owner, partitions)
    assert imb == pytest.approx(loads.max() / loads.mean() - 1, rel=1e-12)
    # LPT bound: the heaviest partition exceeds the mean by at most one block
    assert loads.max() <= loads.mean() + bw.max() + 1e-9


def test_ties_are_deterministic_and_spread():
    owner, imb = assign_blocks(np.ones(8), 4)
    assert owner.tolist() == [0, 1, 2, 3, 0, 1, 2, 3] and imb == 0.0


def test_more_partitions_than_blocks_reports_the_imbalance():
    owner, imb = assign_blocks(np.array([3.0, 1.0]), 4)
    assert owner.tolist() == [0, 1]
    assert imb == pytest.approx(3.0 / 1.0 - 1)  # loads [3, 1, 0, 0], mean 1
    assert assign_blocks(np.zeros(3), 2)[1] == 0.0


@pytest.mark.parametrize("bad", [np.array([1.0, -1.0]), np.array([np.nan])])
def test_assignment_rejects_bad_weights(bad):
    with pytest.raises(ValueError, match="finite values >= 0"):
        assign_blocks(bad, 2)
    with pytest.raises(ValueError, match="partitions=0"):
        assign_blocks(np.ones(2), 0)


def test_block_weights_edge_cases():
    w = np.array([1.0, 2.0, 3.0])
    assert block_weights(np.array([0, 0, 2, 2, 3]), w).tolist() == [0.0, 3.0, 0.0, 3.0]
    assert block_weights(np.array([0, 0]), np.zeros(0)).tolist() == [0.0]


def check_packing(p, shards, w, partitions):
    """Blocks cover [0, N) in order, never straddle a shard, and the reported imbalance is the real one."""
    assert p.block_starts[0] == 0 and p.block_starts[-1] == len(w) and np.all(np.diff(p.block_starts) > 0)
    assert set(shards.tolist()) <= set(p.block_starts.tolist())
    assert p.owner.shape == (len(p.block_starts) - 1,) and p.owner.min() >= 0 and p.owner.max() < partitions
    loads = partition_loads(block_weights(p.block_starts, w), p.owner, partitions)
    np.testing.assert_allclose(loads.sum(), w.sum())
    assert p.imbalance == pytest.approx(loads.max() / loads.mean() - 1, abs=1e-12)
    return loads


@pytest.mark.parametrize(
    "sizes,partitions",
    [([0, 10, 980, 10], 8), ([1000], 5), ([100] * 10, 4), ([37, 0, 0, 400, 63], 3), ([5, 5], 1), ([30] * 100, 16)],
)
def test_cuts_balance_any_shard_layout(sizes, partitions):
    w = np.random.default_rng(3).random(sum(sizes))
    shards = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    p = pack_shards(shards, w, partitions)
    loads = check_packing(p, shards, w, partitions)
    # balanced to about one image (cuts fall between images; a partition fed by two donors sees two roundings)
    assert np.all(np.abs(loads - loads.mean()) <= 2 * w.max() + 1e-9)
    assert p.imbalance <= p.imbalance_whole_shards + 1e-12
    # each partition reads its whole shards plus few pieces: at most partitions - 1 cuts in all
    assert len(p.owner) - sum(1 for n in sizes if n) <= partitions - 1
    again = pack_shards(shards, w, partitions)
    assert np.array_equal(again.block_starts, p.block_starts) and np.array_equal(again.owner, p.owner)


@pytest.mark.parametrize("seed", range(5))
def test_cuts_never_raise_the_heaviest_rank_even_with_fewer_images_than_ranks(seed):
    r = np.random.default_rng(seed)
    n = int(r.integers(5, 60))
    w = r.pareto(1.0, n) + 0.01
    shards = np.linspace(0, n, int(r.integers(1, 100)) + 1).astype(np.int64)
    p = pack_shards(shards, w, 64)
    check_packing(p, np.unique(shards), w, 64)
    assert p.imbalance <= p.imbalance_whole_shards + 1e-12


def test_without_cuts_blocks_are_the_shards():
    w = np.ones(1000)
    shards = np.array([0, 0, 10, 990, 1000], np.int64)
    p = pack_shards(shards, w, 8, cut=False)
    assert np.array_equal(p.block_starts, shards) and p.imbalance == p.imbalance_whole_shards
    assert p.imbalance == pytest.approx(980 / 125 - 1)


def test_tail_cut_finds_the_closest_tail_across_chunks(monkeypatch):
    monkeypatch.setattr(assign, "CUT_CHUNK", 7)
    w = np.arange(1.0, 51.0)  # tail [t, 50) of [0, 50) weighs sum(t+1..50)
    for amount in (0.2, 30.0, 49.0, 300.0, 1275.0, 5000.0):
        t, tail = assign._tail_cut(w, 0, 50, amount)
        assert tail == pytest.approx(w[t:].sum())
        best = min(abs(w[u:].sum() - amount) for u in range(51))
        assert abs(tail - amount) == pytest.approx(best)


def test_packing_edge_cases():
    assert np.array_equal(pack_shards(np.array([0, 3]), np.zeros(3), 4).block_starts, [0, 3])  # nothing to balance
    empty = pack_shards(np.array([0, 0]), np.zeros(0), 2)
    assert empty.owner.shape == (1,) and empty.imbalance == 0.0
    one_heavy = pack_shards(np.array([0, 3]), np.array([0.0, 100.0, 0.0]), 2)  # one image cannot be shared
    assert one_heavy.imbalance == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shard_starts end at 5"):
        pack_shards(np.array([0, 5]), np.ones(3), 2)
    with pytest.raises(ValueError, match="non-decreasing"):
        pack_shards(np.array([0, 2, 1, 3]), np.ones(3), 2)
    with pytest.raises(ValueError, match="partitions=0"):
        pack_shards(np.array([0, 3]), np.ones(3), 0)


def test_64_partitions_over_1000_shards():
    r = np.random.default_rng(4)
    sizes = r.integers(50, 150, 1000)
    w = r.random(int(sizes.sum())) ** 2
    shards = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    bw = block_weights(shards, w)
    _, lpt_only = assign_blocks(bw, 64, refine=False)
    p = pack_shards(shards, w, 64)
    check_packing(p, shards, w, 64)
    assert 0.001 < lpt_only and p.imbalance_whole_shards < lpt_only  # refinement helps whole shards
    assert p.imbalance < 1e-3  # cutting finishes the job
    assert np.array_equal(assign_blocks(bw, 64)[0], assign_blocks_ref(bw, 64)[0])


def test_refinement_matches_twin_on_uneven_blocks():
    bw = np.random.default_rng(6).integers(1, 40, 60).astype(float)
    for partitions in (2, 7):
        owner, imb = assign_blocks(bw, partitions)
        ref_owner, ref_imb = assign_blocks_ref(bw, partitions)
        assert np.array_equal(owner, ref_owner) and imb == pytest.approx(ref_imb)
        assert imb <= assign_blocks(bw, partitions, refine=False)[1]


def test_block_weights_sum_every_block_including_the_last_before_empty_ones():
    w = np.arange(1.0, 11.0)
    starts = np.array([0, 0, 4, 4, 10, 10, 10])  # empty blocks first, between and last
    assert block_weights(starts, w).tolist() == [0.0, 10.0, 0.0, 45.0, 0.0, 0.0]
    assert block_weights(np.array([0, 0]), np.zeros(0)).tolist() == [0.0]
    # a block sums bit for bit the same from a slice as from all weights (what the sampling cache relies on)
    r = np.random.default_rng(5).random(100_003) ** 3
    starts = np.array([0, 17, 40_000, 40_000, 99_999, 100_003])
    sliced = [block_weights(np.array([0, hi - lo]), r[lo:hi])[0] for lo, hi in zip(starts[:-1], starts[1:])]
    assert block_weights(starts, r).tolist() == sliced


@pytest.mark.parametrize("seed", range(6))
def test_packing_from_shard_sums_is_bit_identical_and_fetches_only_cut_shards(seed):
    from tagstream.kernels.assign import pack_shard_sums

    r = np.random.default_rng(seed)
    sizes = r.integers(0, 400, int(r.integers(1, 40)))
    sizes[r.random(sizes.shape[0]) < 0.2] = 0
    w = r.pareto(1.2, int(sizes.sum())) * (r.random(int(sizes.sum())) > 0.1)
    shards = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    partitions = int(r.integers(1, 12))
    fetched = []

    def weights_of(lo, hi):
        fetched.append((lo, hi))
        return w[lo:hi].copy()

    p = pack_shards(shards, w, partitions)
    q = pack_shard_sums(shards, block_weights(shards, w), partitions, weights_of)
    assert np.array_equal(p.block_starts, q.block_starts) and np.array_equal(p.owner, q.owner)
    assert (p.imbalance, p.imbalance_whole_shards) == (q.imbalance, q.imbalance_whole_shards)
    assert p.block_weights.tolist() == q.block_weights.tolist() == block_weights(p.block_starts, w).tolist()
    cut = {lo for lo, hi in zip(p.block_starts[:-1], p.block_starts[1:])} - set(shards.tolist())
    assert len(fetched) <= len(cut) + partitions and all(
        (lo, hi) in set(zip(shards[:-1].tolist(), shards[1:].tolist())) for lo, hi in fetched
    )
