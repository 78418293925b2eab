"""kernels.dedup: the multi-index-hashing join and the brute-force kernel against the NumPy twin."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tagstream.kernels import dedup as dd


def planted(rng: np.random.Generator, n_queries: int, n_base: int, max_flips: int):
    """Random hashes, with every third query a copy of a base hash with up to max_flips bits flipped."""
    base = rng.integers(0, 2**64, n_base, dtype=np.uint64)
    queries = rng.integers(0, 2**64, n_queries, dtype=np.uint64)
    for i in range(0, n_queries, 3):
        h = base[rng.integers(n_base)]
        for bit in rng.choice(64, rng.integers(0, max_flips + 1), replace=False):
            h ^= np.uint64(1) << np.uint64(bit)
        queries[i] = h
    return queries, base


def assert_same(got, want):
    for g, w, name in zip(got, want, ("query", "base", "distance")):
        np.testing.assert_array_equal(g, w, err_msg=name)
        assert g.dtype == w.dtype, name


@pytest.mark.parametrize("max_distance", range(9))
def test_mih_matches_twin_at_every_distance(max_distance):
    rng = np.random.default_rng(100 + max_distance)
    queries, base = planted(rng, 240, 160, max_distance + 2)
    want = dd.join_ref(queries, base, max_distance)
    assert want[0].size > 20  # the planted pairs are there: the comparison is not vacuous
    assert_same(dd.mih_join(queries, base, max_distance), want)
    assert_same(dd.brute_join(queries, base, max_distance), want)
    np.testing.assert_array_equal(dd.brute_counts(queries, base, max_distance), np.bincount(want[0], minlength=240))


@pytest.mark.parametrize("bands", range(dd.MIN_BANDS, dd.MAX_BANDS + 1))
def test_every_band_count_gives_the_same_pairs(bands):
    rng = np.random.default_rng(bands)
    queries, base = planted(rng, 90, 60, 8)
    for max_distance in (0, 3, 7):
        assert_same(dd.mih_join(queries, base, max_distance, bands=bands), dd.join_ref(queries, base, max_distance))


def test_each_pair_once_even_when_it_matches_in_every_band():
    base = np.array([0, 2**64 - 1, 0x0123456789ABCDEF], np.uint64)
    queries = np.concatenate([base, base])  # identical hashes agree on every band
    q, b, d = dd.mih_join(queries, base, 4)
    np.testing.assert_array_equal(q, [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(b, [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(d, 0)


def test_duplicate_hashes_in_base_are_all_reported():
    base = np.array([5, 5, 7, 5], np.uint64)
    q, b, d = dd.mih_join(np.array([5], np.uint64), base, 1)
    np.testing.assert_array_equal(b, [0, 1, 2, 3])  # 7 = 5 with one more bit
    np.testing.assert_array_equal(d, [0, 0, 1, 0])


@pytest.mark.parametrize("n_queries, n_base", [(0, 10), (10, 0), (0, 0)])
def test_empty_inputs(n_queries, n_base):
    rng = np.random.default_rng(0)
    queries = rng.integers(0, 2**64, n_queries, dtype=np.uint64)
    base = rng.integers(0, 2**64, n_base, dtype=np.uint64)
    for out in (dd.mih_join(queries, base, 3), dd.brute_join(queries, base, 3), dd.join(queries, base, 3)[:3]):
        assert [a.size for a in out] == [0, 0, 0]


def test_query_chunks_are_stitched(monkeypatch):
    monkeypatch.setattr(dd, "QUERY_CHUNK", 7)
    rng = np.random.default_rng(5)
    queries, base = planted(rng, 50, 40, 4)
    assert_same(dd.mih_join(queries, base, 4), dd.join_ref(queries, base, 4))


def test_join_plans_mih_at_scale_and_brute_force_where_cheaper():
    assert dd.plan_join(10**7, 10**5, 4)[0] == "mih"
    assert dd.plan_join(10**7, 10**5, 24) == ("brute", 0)  # candidates explode: all pairs is cheaper
    assert dd.plan_join(50, 40, 2) == ("brute", 0)  # tables cost more than 2,000 comparisons


def test_join_is_correct_whichever_method_it_picks():
    rng = np.random.default_rng(6)
    queries, base = planted(rng, 60, 50, 20)
    for max_distance in (2, 20):
        *pairs, method = dd.join(queries, base, max_distance)
        assert method.startswith("brute force")
        assert_same(pairs, dd.join_ref(queries, base, max_distance))
    big_q, big_b = planted(rng, 30000, 3000, 3)
    *pairs, method = dd.join(big_q, big_b, 3)
    assert method.startswith("multi-index hashing")
    assert_same(pairs, dd.join_ref(big_q, big_b, 3))


def test_band_layout_covers_64_bits_without_overlap():
    for bands in range(dd.MIN_BANDS, dd.MAX_BANDS + 1):
        shifts, widths = dd.band_layout(bands)
        assert widths.sum() == 64 and widths.max() - widths.min() <= 1
        covered = np.zeros(64, int)
        for s, w in zip(shifts, widths):
            covered[int(s) : int(s) + int(w)] += 1
        np.testing.assert_array_equal(covered, 1)


@pytest.mark.parametrize("bands", range(dd.MIN_BANDS, dd.MAX_BANDS + 1))
def test_band_radii_satisfy_the_pigeonhole_bound(bands):
    for max_distance in range(0, 20):
        radii = dd.band_radii(max_distance, bands)
        # the cheapest way to miss every band: distance radii + 1 on each; it must exceed D
        assert int(np.sum(radii + 1)) == max_distance + 1
        assert radii.max() - radii.min() <= 1 and radii.min() >= -1


def test_flip_masks_are_exactly_the_values_within_radius():
    masks = dd.flip_masks(6, 2)
    assert masks.size == 1 + 6 + 15 and np.all(np.diff(masks.astype(np.int64)) > 0)
    assert np.bitwise_count(masks).max() == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_distance": -1}, "max_distance"),
        ({"max_distance": 33}, "max_distance"),
        ({"max_distance": 2.0}, "max_distance"),
        ({"max_distance": 2, "bands": 3}, "bands"),
        ({"max_distance": 2, "bands": 17}, "bands"),
    ],
)
def test_bad_arguments_name_the_value_and_the_allowed_set(kwargs, match):
    h = np.zeros(3, np.uint64)
    with pytest.raises(ValueError, match=match):
        dd.mih_join(h, h, **kwargs)


def test_wrong_dtype_is_refused():
    with pytest.raises(ValueError, match="uint64"):
        dd.join_ref(np.zeros(3, np.int64), np.zeros(3, np.uint64), 1)


def test_kernels_agree_with_twin_with_jit_disabled():
    code = (
        "import numpy as np\n"
        "from tagstream.kernels import dedup as dd\n"
        "rng = np.random.default_rng(7)\n"
        "b = rng.integers(0, 2**64, 40, dtype=np.uint64)\n"
        "q = np.concatenate([b ^ np.uint64(5), rng.integers(0, 2**64, 20, dtype=np.uint64)])\n"
        "for D in (0, 2, 5):\n"
        "    want = dd.join_ref(q, b, D)\n"
        "    for got in (dd.mih_join(q, b, D), dd.brute_join(q, b, D)):\n"
        "        assert all(np.array_equal(g, w) for g, w in zip(got, want)), D\n"
        "assert dd.join_ref(q, b, 2)[0].size == 40\n"
        "print('ok')\n"
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
