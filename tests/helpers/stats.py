"""Chi-square goodness of fit for the sampler tests (scipy is not installed: the p-value is the
regularised upper incomplete gamma function, torch.special.gammaincc, in float64)."""

from __future__ import annotations

import math

import numpy as np
import torch

ALPHA = 1e-4  # per test; the seeds are fixed, so a pass or fail is reproducible


def chi2_pvalue(stat: float, df: int) -> float:
    """P(X >= stat) for X ~ chi-square(df)."""
    return float(
        torch.special.gammaincc(
            torch.tensor(df / 2.0, dtype=torch.float64), torch.tensor(stat / 2.0, dtype=torch.float64)
        )
    )


def chi2_fit(observed: np.ndarray, expected: np.ndarray) -> tuple[float, int, float]:
    """(statistic, degrees of freedom, p-value) of observed counts against expected counts.

    Bins with zero expectation must be empty (else p = 0); the rest need expectation >= 5 for the
    approximation to hold, which the callers arrange.
    """
    observed = np.asarray(observed, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert observed.shape == expected.shape
    assert abs(observed.sum() - expected.sum()) <= 1e-6 * max(1.0, expected.sum())
    zero = expected == 0
    if observed[zero].sum() > 0:
        return math.inf, int((~zero).sum()) - 1, 0.0
    o, e = observed[~zero], expected[~zero]
    assert e.min() >= 5, f"expected counts too small for chi-square ({e.min():.2f})"
    stat = float(((o - e) ** 2 / e).sum())
    df = int(o.size) - 1
    return stat, df, chi2_pvalue(stat, df)
