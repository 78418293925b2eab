"""Linear probe against closed-form Bayes accuracies; metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tagstream.train.metrics import mean_average_precision
from tagstream.train.probe import (
    ProbeConfig,
    fit_linear_probe,
    per_class_accuracy,
    stratified_split,
    topk_accuracy,
)


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _affine(rng: np.random.Generator, z: np.ndarray, a: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return z @ a.T + shift


def test_two_gaussians_reach_bayes_accuracy():
    """Equal-covariance Gaussians at Mahalanobis distance Delta: Bayes accuracy = Phi(Delta / 2).

    The features are seen through a random invertible affine map (anisotropic, shifted): the Bayes
    rate does not change, so a probe that standardises and fits correctly must still reach it.
    """
    rng = np.random.default_rng(1)
    d, delta, n_train, n_test = 8, 2.0, 3000, 20000
    mu = np.zeros(d)
    mu[0] = delta / 2

    def sample(n):
        y = rng.integers(0, 2, n)
        z = rng.standard_normal((n, d)) + np.where(y[:, None] == 1, mu, -mu)
        return z, y

    a = rng.standard_normal((d, d)) * np.array([10.0, 0.1, 1, 1, 1, 1, 1, 3])
    shift = rng.normal(50, 5, d)
    ztr, ytr = sample(n_train)
    zte, yte = sample(n_test)
    probe = fit_linear_probe(_affine(rng, ztr, a, shift), ytr, num_classes=2)
    acc = topk_accuracy(probe.scores(_affine(rng, zte, a, shift)), yte, k=1)
    bayes = _phi(delta / 2)  # 0.8413
    # test-set standard error ~0.0026; estimation loss of 9 parameters from 3000 points ~0.002
    assert acc == pytest.approx(bayes, abs=0.012)
    assert acc <= bayes + 0.012


def test_orthogonal_gaussians_multiclass_bayes_accuracy():
    """K classes with means a*e_k and identity covariance: P(correct) = ∫ phi(z) Phi(z + a)^(K-1) dz."""
    rng = np.random.default_rng(2)
    k, d, a, n_per = 5, 6, 1.5, 800
    means = np.zeros((k, d))
    means[np.arange(k), np.arange(k)] = a

    def sample(n):
        y = rng.integers(0, k, n)
        return rng.standard_normal((n, d)) + means[y], y

    xtr, ytr = sample(k * n_per)
    xte, yte = sample(20000)
    z = np.linspace(-9, 9, 20001)
    dens = np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + np.vectorize(math.erf)((z + a) / math.sqrt(2)))
    bayes = float(np.trapezoid(dens * cdf ** (k - 1), z))
    probe = fit_linear_probe(xtr, ytr, num_classes=k)
    acc = topk_accuracy(probe.scores(xte), yte, k=1)
    assert acc == pytest.approx(bayes, abs=0.015)
    assert topk_accuracy(probe.scores(xte), yte, k=5) == 1.0


def test_random_features_give_chance():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 16))
    y = rng.integers(0, 4, 2000)
    probe = fit_linear_probe(x[:1000], y[:1000], num_classes=4)
    acc = topk_accuracy(probe.scores(x[1000:]), y[1000:], k=1)
    assert acc == pytest.approx(0.25, abs=0.05)


def test_weight_decay_selected_on_validation_and_reported():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((400, 50))
    y = (x[:, 0] > 0).astype(np.int64)
    probe = fit_linear_probe(x, y, num_classes=2, config=ProbeConfig(weight_decays=(1e-4, 1e-1, 10.0)))
    assert set(probe.val_scores) == {"0.0001", "0.1", "10.0"}
    assert probe.weight_decay == max(sorted((1e-4, 1e-1, 10.0), reverse=True), key=lambda w: probe.val_scores[str(w)])


def test_multilabel_probe_map():
    rng = np.random.default_rng(5)
    n, c = 3000, 4
    y = (rng.random((n, c)) < 0.3).astype(np.float64)
    x = y * 3.0 + rng.standard_normal((n, c))  # each label visible in its own feature
    probe = fit_linear_probe(x[:2000], y[:2000], num_classes=c, task="multi")
    m = mean_average_precision(probe.scores(x[2000:]), y[2000:] > 0)
    # a score on x_c alone ranks positives (mean 3) over negatives (mean 0): AUC = Phi(3/sqrt2) = 0.983
    assert m > 0.9
    noise = mean_average_precision(rng.standard_normal((1000, c)), y[2000:] > 0)
    assert noise < 0.45


def test_constant_feature_and_bad_input():
    x = np.column_stack([np.ones(20), np.arange(20.0)])
    y = (np.arange(20) >= 10).astype(np.int64)
    probe = fit_linear_probe(x, y, num_classes=2, config=ProbeConfig(weight_decays=(1e-4,)))
    assert np.isfinite(probe.scores(x)).all()
    assert topk_accuracy(probe.scores(x), y, k=1) == 1.0
    with pytest.raises(ValueError, match="task"):
        fit_linear_probe(x, y, num_classes=2, task="regression")
    with pytest.raises(ValueError, match="labels must lie"):
        fit_linear_probe(x, y + 5, num_classes=2)
    with pytest.raises(ValueError, match="weight_decays"):
        ProbeConfig(weight_decays=())


def test_topk_and_per_class_accuracy_by_hand():
    s = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    y = np.array([1, 1, 0, 0])
    assert topk_accuracy(s, y, k=1) == 0.5
    assert topk_accuracy(s, y, k=2) == 0.75
    assert topk_accuracy(s, y, k=10) == 1.0
    np.testing.assert_allclose(per_class_accuracy(s, y, 4), [0.5, 0.5, np.nan, np.nan])


def test_stratified_split_keeps_every_class_in_train():
    y = np.array([0] * 10 + [1] * 2 + [2])
    tr, va = stratified_split(y, fraction=0.5, seed=0)
    assert set(y[tr]) == {0, 1, 2}
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)
