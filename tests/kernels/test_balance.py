"""A packing evened to whole images: every partition q or q + 1 drawable images, pieces within shards, weights
asked for only where a block is cut."""

from __future__ import annotations

import numpy as np
import pytest

from tagstream.kernels.assign import Packing, pack_shards
from tagstream.kernels.balance import balance_counts


def _drawable(seed: int, shard_sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """0/1 weights (about 70 % drawable, runs of undrawable images) over shards of the given sizes."""
    rng = np.random.default_rng(seed)
    n = sum(shard_sizes)
    w = (rng.random(n) < 0.7).astype(np.float64)
    w[(rng.integers(0, n - 40, 3)[:, None] + np.arange(40)).ravel()] = 0.0
    starts = np.concatenate([[0], np.cumsum(shard_sizes)]).astype(np.int64)
    return w, starts


def _check(even: Packing, w: np.ndarray, shard_starts: np.ndarray, partitions: int) -> np.ndarray:
    """The invariants of an evened packing; returns each partition's drawable count."""
    b = even.block_starts
    assert b[0] == 0 and b[-1] == w.shape[0] and np.all(np.diff(b) > 0)
    for lo, hi in zip(b[:-1], b[1:]):  # a block never straddles a shard
        k = np.searchsorted(shard_starts, lo, side="right") - 1
        assert hi <= shard_starts[k + 1]
    sums = np.array([w[lo:hi].sum() for lo, hi in zip(b[:-1], b[1:])])
    assert np.array_equal(sums, even.block_weights)
    loads = np.bincount(even.owner, weights=sums, minlength=partitions).astype(np.int64)
    q, r = divmod(int(w.sum()), partitions)
    assert sorted(loads.tolist()) == [q] * (partitions - r) + [q + 1] * r
    return loads


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 7, 16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_partition_holds_q_or_q_plus_one_drawable_images(partitions, seed):
    shard_sizes = [300, 0, 1200, 37, 5, 800, 463]
    w, starts = _drawable(seed, shard_sizes)
    packing = pack_shards(starts, w, partitions)
    asked: list[tuple[int, int]] = []

    def weights_of(lo: int, hi: int) -> np.ndarray:
        asked.append((lo, hi))
        return w[lo:hi]

    even = balance_counts(packing, partitions, weights_of)
    _check(even, w, starts, partitions)
    assert len(asked) <= 2 * partitions  # only blocks that are cut are read
    assert even.imbalance_whole_shards == packing.imbalance_whole_shards
    again = balance_counts(packing, partitions, lambda lo, hi: w[lo:hi])
    assert all(np.array_equal(getattr(even, f), getattr(again, f)) for f in ("block_starts", "owner", "block_weights"))


def test_a_balanced_packing_is_left_alone_and_a_lopsided_one_is_evened():
    w = np.ones(12)
    starts = np.array([0, 6, 12])
    balanced = Packing(starts, np.array([0, 1]), 0.0, 0.0, np.array([6.0, 6.0]))
    same = balance_counts(balanced, 2, lambda lo, hi: pytest.fail("nothing to cut"))
    assert same.block_starts.tolist() == [0, 6, 12] and same.owner.tolist() == [0, 1]
    # everything on partition 0 of 3 (10 drawable: 4, 3, 3); undrawable images travel with the tail cut after them
    w = np.array([1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1], dtype=np.float64)
    lopsided = Packing(starts, np.array([0, 0]), 2.0, 2.0, np.array([5.0, 5.0]))
    even = balance_counts(lopsided, 3, lambda lo, hi: w[lo:hi])
    loads = _check(even, w, starts, 3)
    assert loads.tolist() == [4, 3, 3] and even.imbalance == pytest.approx(4 / (10 / 3) - 1)


def test_fewer_images_than_partitions_leaves_some_empty():
    w = np.array([1.0, 0.0, 1.0])
    even = balance_counts(pack_shards(np.array([0, 3]), w, 4), 4, lambda lo, hi: w[lo:hi])
    assert sorted(np.bincount(even.owner, weights=even.block_weights, minlength=4).tolist()) == [0, 0, 1, 1]


def test_weights_that_do_not_count_images_are_refused():
    fractional = Packing(np.array([0, 2]), np.array([0]), 0.0, 0.0, np.array([1.5]))
    with pytest.raises(ValueError, match="whole image count"):
        balance_counts(fractional, 2, lambda lo, hi: np.ones(hi - lo))
    mismatch = Packing(np.array([0, 4, 4]), np.array([0, 0]), 0.0, 0.0, np.array([3.0, 0.0]))
    with pytest.raises(ValueError, match=r"weights_of\(0, 4\) has 4 drawable images, the packing 3"):
        balance_counts(mismatch, 2, lambda lo, hi: np.ones(hi - lo))
