"""Alias tables: identical to the Vose twin, exact implied distribution, counter-based draws, chi-square fit."""

from __future__ import annotations

import numpy as np
import pytest

from tagstream.kernels.alias import alias_distribution, build_alias, build_alias_ref, draw_alias, draw_alias_ref
from tagstream.kernels.rng import stream_key
from tests.helpers.stats import ALPHA, chi2_fit

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # NUMBA_DISABLE_JIT=1 scalar wrap


def table(w):
    w = np.asarray(w, dtype=np.float64)
    prob, alias = np.empty(len(w)), np.empty(len(w), np.int64)
    total = build_alias(w, prob, alias)
    return prob, alias, total


CASES = {
    "random": np.random.default_rng(0).random(500) ** 3,
    "with_zeros": np.where(np.arange(300) % 4 == 0, 0.0, np.random.default_rng(1).random(300)),
    "one": np.array([2.5]),
    "equal": np.ones(64),
    "single_positive": np.eye(1, 50, 17).ravel(),
    "wide_range": np.logspace(-12, 12, 200),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_build_matches_twin_and_distribution(name):
    w = CASES[name]
    prob, alias, total = table(w)
    ref_prob, ref_alias = build_alias_ref(w)
    assert np.array_equal(prob, ref_prob) and np.array_equal(alias, ref_alias)
    assert total == pytest.approx(w.sum(), rel=1e-12)
    assert np.all((prob >= 0) & (prob <= 1)) and np.all((alias >= 0) & (alias < len(w)))
    np.testing.assert_allclose(alias_distribution(prob, alias), w / w.sum(), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("bad", [[], [0.0, 0.0], [1.0, -0.5], [1.0, np.nan], [1.0, np.inf]])
def test_build_rejects_bad_weights(bad):
    with pytest.raises(ValueError, match="weights must be finite"):
        table(bad)


def test_build_rejects_wrong_buffers():
    with pytest.raises(ValueError, match="alias_out"):
        build_alias(np.ones(3), np.empty(3), np.empty(3, np.int32))
    with pytest.raises(ValueError, match="weights must be 1-D float64"):
        build_alias(np.ones(3, np.float32), np.empty(3), np.empty(3, np.int64))


@pytest.mark.parametrize("name", sorted(CASES))
def test_draws_match_twin_and_skip_zero_weights(name):
    w = CASES[name]
    prob, alias, _ = table(w)
    key = stream_key(11, 2)
    out = draw_alias(prob, alias, key, 7, np.empty(3000, np.int64))
    assert np.array_equal(out, draw_alias_ref(prob, alias, key, 7, 3000))
    assert np.all(w[out] > 0)


def test_draw_slices_need_no_prefix():
    prob, alias, _ = table(CASES["random"])
    key = stream_key(0, 5)
    full = draw_alias(prob, alias, key, 0, np.empty(5000, np.int64))
    for lo, hi in [(0, 1), (1234, 1300), (4999, 5000), (2500, 2500)]:
        assert np.array_equal(draw_alias(prob, alias, key, lo, np.empty(hi - lo, np.int64)), full[lo:hi])
    other = draw_alias(prob, alias, stream_key(0, 6), 0, np.empty(5000, np.int64))
    assert np.mean(other == full) < 0.1


def test_draws_fit_the_weights():
    w = np.random.default_rng(2).random(40) ** 2 + 0.05
    w[[3, 9]] = 0.0
    prob, alias, _ = table(w)
    draws = 40_000
    out = draw_alias(prob, alias, stream_key(3), 0, np.empty(draws, np.int64))
    observed = np.bincount(out, minlength=40)
    assert chi2_fit(observed, draws * w / w.sum())[2] > ALPHA
    # the same test has power: it rejects the law with the zero-weight bins filled in
    assert chi2_fit(observed, draws * (w + 0.05) / (w + 0.05).sum())[2] < ALPHA


def test_draw_rejects_empty_table_and_negative_start():
    with pytest.raises(ValueError, match="empty alias table"):
        draw_alias(np.empty(0), np.empty(0, np.int64), stream_key(0), 0, np.empty(3, np.int64))
    prob, alias, _ = table([1.0, 2.0])
    with pytest.raises(ValueError, match="one shape"):
        draw_alias(prob, alias[:1], stream_key(0), 0, np.empty(3, np.int64))
    with pytest.raises(ValueError, match="start=-1"):
        draw_alias(prob, alias, stream_key(0), -1, np.empty(3, np.int64))
