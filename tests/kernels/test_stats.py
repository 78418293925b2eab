"""Chi-square goodness of fit for the sampler tests (scipy is not installed: the p-value is the
regularised upper incomplete gamma function, torch.special.gammaincc, in float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.helpers.stats import ALPHA, chi2_fit, chi2_pvalue


def test_pvalue_matches_closed_forms():
    # chi-square with 2 df is exponential with mean 2: P(X >= x) = exp(-x / 2)
    for x in (0.1, 1.0, 5.0, 20.0):
        assert chi2_pvalue(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-10)
    # 1 df: P(X >= x) = erfc(sqrt(x / 2))
    for x in (0.5, 3.84, 10.83):
        assert chi2_pvalue(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-9)


def test_fit_accepts_multinomial_and_rejects_a_wrong_law():
    rng = np.random.default_rng(1)
    p = rng.random(50) + 0.2
    p /= p.sum()
    draws = 20_000
    obs = np.bincount(rng.choice(50, size=draws, p=p), minlength=50)
    assert chi2_fit(obs, p * draws)[2] > ALPHA
    q = np.sqrt(p) / np.sqrt(p).sum()  # a different, plausible law
    assert chi2_fit(obs, q * draws)[2] < ALPHA


def test_fit_rejects_draws_where_nothing_is_expected():
    assert chi2_fit(np.array([5.0, 5.0, 1.0]), np.array([5.5, 5.5, 0.0]))[2] == 0.0
