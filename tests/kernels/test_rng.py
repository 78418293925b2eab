"""Counter-based RNG and the holdout split: kernel vs NumPy twin, known splitmix64 values, stability."""

from __future__ import annotations

import numpy as np
import pytest

from tagstream.kernels import rng

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # NUMBA_DISABLE_JIT=1 scalar wrap


def test_splitmix64_known_output():
    # splitmix64 seeded with 0: the first output is 0xE220A8397B1DCDAF (reference C implementation)
    assert int(rng.counter_u64(np.uint64(0), np.uint64(0))) == 0xE220A8397B1DCDAF
    assert int(rng.counter_u64_ref(np.uint64(0), np.array([0], np.uint64))[0]) == 0xE220A8397B1DCDAF
    assert int(rng.mix64(np.uint64(0))) == 0


def test_mix64_kernel_matches_twin():
    r = np.random.default_rng(0)
    z = r.integers(0, 2**63, 200, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    z = np.concatenate([z, np.array([0, 1, 2**64 - 1, 2**63], dtype=np.uint64)])
    ref = rng.mix64_ref(z)
    assert [int(rng.mix64(v)) for v in z] == [int(v) for v in ref]
    assert [rng.mix64_int(int(v)) for v in z] == [int(v) for v in ref]


def test_unit_floats_in_range():
    h = np.array([0, 2**64 - 1, 2**63], dtype=np.uint64)
    u = rng.to_unit_ref(h)
    assert u[0] == 0.0 and u[1] < 1.0 and u[2] == 0.5
    assert [rng.to_unit(v) for v in h] == list(u)


def test_stream_keys_differ_and_accept_negative_seeds():
    keys = {int(rng.stream_key(s, *w)) for s in (0, 1, -1) for w in ((), (0,), (1,), (0, 1), (1, 0))}
    assert len(keys) == 15
    assert rng.stream_key(-1, 3) == rng.stream_key(2**64 - 1, 3)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 1.0])
def test_holdout_mask_matches_twin_and_fraction(fraction):
    n = 20_000
    m = rng.holdout_mask(n, fraction, seed=3)
    assert m.dtype == np.bool_ and m.shape == (n,)
    assert np.array_equal(m, rng.holdout_mask_ref(n, fraction, seed=3))
    sd = np.sqrt(n * fraction * (1 - fraction))
    assert abs(m.sum() - n * fraction) <= 5 * sd + 1e-9


def test_holdout_is_per_image_and_seeded():
    assert np.array_equal(rng.holdout_mask(500, 0.3, 7), rng.holdout_mask(2000, 0.3, 7)[:500])
    assert not np.array_equal(rng.holdout_mask(2000, 0.3, 7), rng.holdout_mask(2000, 0.3, 8))
    assert rng.holdout_mask(0, 0.3).shape == (0,)
    whole = rng.holdout_mask(2000, 0.3, 7)
    for lo, hi in ((0, 0), (3, 17), (1500, 2000), (999, 1000)):  # a range is the slice of the whole
        assert np.array_equal(rng.holdout_mask(hi - lo, 0.3, 7, start=lo), whole[lo:hi])
        assert np.array_equal(rng.holdout_mask_ref(hi - lo, 0.3, 7, start=lo), whole[lo:hi])


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_holdout_rejects_bad_fraction(bad):
    with pytest.raises(ValueError, match="fraction"):
        rng.holdout_mask(10, bad)
