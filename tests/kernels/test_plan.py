"""Epoch plans: invariants run over every sampling mode and several topologies, the Feistel permutation
against its twin, chi-square fit of drawn images and classes, and edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from tagstream.kernels.assign import pack_shards
from tagstream.kernels.plan import build_partition_table, epoch_plan, feistel_permute, feistel_permute_ref, plan_length
from tagstream.kernels.rng import stream_key
from tagstream.kernels.weights import compute_weights
from tests.helpers.csr import random_csr
from tests.helpers.stats import ALPHA, chi2_fit

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # NUMBA_DISABLE_JIT=1 scalar wrap

N = 600
SHARDS = np.array([0, 150, 150, 400, 430, 600], np.int64)  # one empty shard, one small one
MODES = [
    ("sqrt", "sum", True),
    ("uniform", "mean", True),
    ("power:2", "max", True),
    ("natural", "sum", True),
    ("natural", "sum", False),
]
TOPOLOGIES = [1, 2, 3, 8]  # 8 partitions > 4 non-empty shards: shards are cut


def setup(sampling: str, combine: str, partitions: int):
    off, lab = random_csr(N, 20, seed=7)
    eligible = np.ones(N, bool)
    eligible[::11] = False
    w = compute_weights(off, lab, 20, sampling, combine, eligible)
    packing = pack_shards(SHARDS, w, partitions)
    return w, packing.block_starts, packing.owner


@pytest.mark.parametrize("partitions", TOPOLOGIES)
@pytest.mark.parametrize("sampling,combine,replacement", MODES)
def test_plan_invariants(sampling, combine, replacement, partitions):
    w, blocks, owner = setup(sampling, combine, partitions)
    samples = 1000
    plans = []
    for partition in range(partitions):
        plan = epoch_plan(w, blocks, owner, 5, 0, partition, partitions, samples, replacement)
        plans.append(plan)
        # equal lengths: no rank waits for another in a collective
        assert plan.dtype == np.int64 and plan.shape == (samples // partitions,)
        # only the partition's own blocks, only drawable images
        mine = np.zeros(N, bool)
        for b in np.flatnonzero(owner == partition):
            mine[blocks[b] : blocks[b + 1]] = True
        assert mine[plan].all() and np.all(w[plan] > 0)
        # a pure function: same inputs, same plan; another epoch, another plan
        assert np.array_equal(plan, epoch_plan(w, blocks, owner, 5, 0, partition, partitions, samples, replacement))
        assert not np.array_equal(plan, epoch_plan(w, blocks, owner, 5, 1, partition, partitions, samples, replacement))
        assert not np.array_equal(plan, epoch_plan(w, blocks, owner, 6, 0, partition, partitions, samples, replacement))
        # resuming is slicing, and a slice never needs its prefix
        length = samples // partitions
        for lo, hi in [(0, 0), (0, 7), (length // 3, length // 2 + 1), (length - 1, length)]:
            part = epoch_plan(w, blocks, owner, 5, 0, partition, partitions, samples, replacement, start=lo, stop=hi)
            assert np.array_equal(part, plan[lo:hi])
        assert np.array_equal(
            epoch_plan(w, blocks, owner, 5, 0, partition, partitions, samples, replacement, start=9), plan[9:]
        )
    # partitions own disjoint images
    pools = [set(np.unique(p).tolist()) for p in plans]
    assert all(not (pools[i] & pools[j]) for i in range(partitions) for j in range(i))


@pytest.mark.parametrize("partitions", [1, 3])
def test_without_replacement_is_a_permutation_per_pass(partitions):
    w, blocks, owner = setup("natural", "sum", partitions)
    for partition in range(partitions):
        pool = build_partition_table(w, blocks, owner, partition, replacement=False).pool
        n = len(pool)
        plan = epoch_plan(
            w, blocks, owner, 1, 0, partition, partitions, partitions * (2 * n + n // 2), replacement=False
        )
        assert np.array_equal(np.sort(plan[:n]), pool) and np.array_equal(np.sort(plan[n : 2 * n]), pool)
        assert len(np.unique(plan[2 * n :])) == n // 2  # truncated third pass: no repeats
        assert not np.array_equal(plan[:n], plan[n : 2 * n])  # each pass has its own key
        short = epoch_plan(w, blocks, owner, 1, 0, partition, partitions, partitions * (n // 2), replacement=False)
        assert len(np.unique(short)) == len(short)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 16, 17, 100, 1000, 4097])
def test_feistel_is_a_bijection_matching_its_twin(n):
    key = stream_key(3, n)
    out = feistel_permute(n, key, 0, np.empty(n, np.int64))
    assert np.array_equal(np.sort(out), np.arange(n))
    assert np.array_equal(out, feistel_permute_ref(n, key, np.arange(n)))
    if n >= 16:
        assert not np.array_equal(out, np.arange(n))
        assert not np.array_equal(out, feistel_permute(n, stream_key(4, n), 0, np.empty(n, np.int64)))
        assert np.array_equal(feistel_permute(n, key, n // 2, np.empty(n - n // 2, np.int64)), out[n // 2 :])


def test_feistel_positions_are_spread_uniformly():
    """Where position 0 lands, over many keys, is uniform on [0, n)."""
    n, keys = 20, 4000
    first = np.array([feistel_permute(n, stream_key(k), 0, np.empty(1, np.int64))[0] for k in range(keys)])
    assert chi2_fit(np.bincount(first, minlength=n), np.full(n, keys / n))[2] > ALPHA


@pytest.mark.parametrize("partitions", [1, 3])
def test_drawn_images_fit_each_partitions_weights(partitions):
    """Each partition's draws are multinomial over its pool with p_i = w_i / W_p: chi-square per partition."""
    off, lab = random_csr(120, 8, seed=9)
    w = compute_weights(off, lab, 8, "sqrt")
    shards = np.array([0, 40, 80, 120], np.int64)
    packing = pack_shards(shards, w, partitions)
    blocks, owner = packing.block_starts, packing.owner
    samples = 30_000 * partitions
    for partition in range(partitions):
        plan = epoch_plan(w, blocks, owner, 2, 0, partition, partitions, samples)
        pool = build_partition_table(w, blocks, owner, partition).pool
        expected = len(plan) * w[pool] / w[pool].sum()
        observed = np.bincount(np.searchsorted(pool, plan), minlength=len(pool))
        assert chi2_fit(observed, expected)[2] > ALPHA


@pytest.mark.parametrize("sampling,a", [("sqrt", 0.5), ("uniform", 0.0), ("natural", 1.0)])
def test_drawn_class_frequencies_follow_the_formula(sampling, a):
    """Single-label images, one partition: class c is drawn with probability n_c^a / sum_d n_d^a."""
    r = np.random.default_rng(10)
    labels = np.minimum(r.zipf(1.6, 3000) - 1, 11).astype(np.int32)
    off = np.arange(3001, dtype=np.int64)
    w = compute_weights(off, labels, 12, sampling)
    n = np.bincount(labels, minlength=12).astype(float)
    assert n.min() > 0
    draws = 40_000
    plan = epoch_plan(w, np.array([0, 3000]), np.zeros(1, np.int64), 4, 0, 0, 1, draws)
    observed = np.bincount(labels[plan], minlength=12)
    law = n**a / (n**a).sum()
    assert chi2_fit(observed, draws * law)[2] > ALPHA
    other = n ** (a + 0.25) / (n ** (a + 0.25)).sum()  # the test can tell a neighbouring power apart
    assert chi2_fit(observed, draws * other)[2] < ALPHA


def test_plan_edge_cases():
    w = np.array([0.0, 0.0, 1.0, 2.0])
    blocks = np.array([0, 2, 4], np.int64)
    owner = np.array([0, 1], np.int64)
    with pytest.raises(ValueError, match="partition 0 owns no image with positive weight"):
        epoch_plan(w, blocks, owner, 0, 0, 0, 2, 10)
    assert set(epoch_plan(w, blocks, owner, 0, 0, 1, 2, 10).tolist()) <= {2, 3}
    with pytest.raises(ValueError, match="samples_per_epoch=1 must be >= partitions=2"):
        plan_length(1, 2)
    with pytest.raises(ValueError, match="partition=2 must be in"):
        epoch_plan(w, blocks, owner, 0, 0, 2, 2, 10)
    with pytest.raises(ValueError, match=r"slice \[5, 3\)"):
        epoch_plan(w, blocks, owner, 0, 0, 1, 2, 10, start=5, stop=3)
    with pytest.raises(ValueError, match="blocks do not match"):
        epoch_plan(w, np.array([0, 3], np.int64), np.zeros(1, np.int64), 0, 0, 0, 1, 10)
    one = epoch_plan(np.array([3.0]), np.array([0, 1]), np.zeros(1, np.int64), 0, 0, 0, 1, 5, replacement=False)
    assert one.tolist() == [0, 0, 0, 0, 0]
