"""Class counts and per-image weights: kernels vs NumPy twins on random CSR and edge cases, and the formula by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tagstream.kernels.counts import class_counts, class_counts_ref, class_weight_sums, class_weight_sums_ref
from tagstream.kernels.weights import COMBINES, compute_weights, sample_weights, sample_weights_ref, sampling_power
from tests.helpers.csr import csr, random_csr


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("masked", [False, True])
def test_counts_match_twin(seed, masked):
    off, lab = random_csr(400, 30, seed)
    eligible = np.random.default_rng(seed + 10).random(400) < 0.7 if masked else None
    got = class_counts(off, lab, eligible, np.full(30, 99, np.int64))
    assert np.array_equal(got, class_counts_ref(off, lab, eligible, 30))


def test_counts_edge_cases():
    off, lab = csr([[], [0], [0, 2], []])
    assert class_counts(off, lab, None, np.zeros(4, np.int64)).tolist() == [2, 0, 1, 0]
    assert class_counts(off, lab, np.array([True, False, True, True]), np.zeros(4, np.int64)).tolist() == [1, 0, 1, 0]
    empty_off, empty_lab = csr([])
    assert class_counts(empty_off, empty_lab, None, np.zeros(3, np.int64)).tolist() == [0, 0, 0]


def test_counts_reject_bad_input():
    off, lab = csr([[0, 5]])
    with pytest.raises(ValueError, match="outside the class range"):
        class_counts(off, lab, None, np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="int64/int32"):
        class_counts(off.astype(np.int32), lab, None, np.zeros(9, np.int64))
    with pytest.raises(ValueError, match="eligible"):
        class_counts(off, lab, np.ones(3, bool), np.zeros(9, np.int64))
    with pytest.raises(ValueError, match="label_offsets must run"):
        class_counts(np.array([0, 5], np.int64), lab, None, np.zeros(9, np.int64))


def test_class_weight_sums_match_twin_and_hand():
    off, lab = random_csr(300, 25, 8)
    iw = np.random.default_rng(9).random(300)
    iw[::3] = 0.0
    got = class_weight_sums(off, lab, iw, np.full(25, 5.0))
    np.testing.assert_allclose(got, class_weight_sums_ref(off, lab, iw, 25), rtol=1e-12)
    off, lab = csr([[0, 2], [], [2]])
    assert class_weight_sums(off, lab, np.array([1.5, 9.0, 2.0]), np.zeros(3)).tolist() == [1.5, 0.0, 3.5]
    with pytest.raises(ValueError, match="outside the class range"):
        class_weight_sums(off, lab, np.ones(3), np.zeros(2))
    with pytest.raises(ValueError, match="image_weights must have shape"):
        class_weight_sums(off, lab, np.ones(2), np.zeros(3))


@pytest.mark.parametrize("combine", COMBINES)
@pytest.mark.parametrize("power", [None, 0.0, 0.5, 1.0, 2.0, 0.3])
def test_weights_match_twin(combine, power):
    off, lab = random_csr(300, 25, 3)
    eligible = np.random.default_rng(4).random(300) < 0.8
    counts = class_counts(off, lab, eligible, np.zeros(25, np.int64))
    counts[7] = 0  # a class with zero count contributes nothing
    got = sample_weights(off, lab, counts, power, combine, eligible, np.full(300, -1.0))
    np.testing.assert_allclose(got, sample_weights_ref(off, lab, counts, power, combine, eligible), rtol=1e-12, atol=0)
    assert np.all(got[~eligible] == 0) and np.all(got[np.diff(off) == 0] == 0)


def test_weights_formula_by_hand():
    # classes: 0 on 4 images, 1 on 1 image, 2 on none (zero count)
    off, lab = csr([[0], [0, 1], [0], [0], [], [2]])
    counts = class_counts(off, lab, None, np.zeros(3, np.int64))
    assert counts.tolist() == [4, 1, 1]
    counts = np.array([4, 1, 0])  # pretend class 2 is counted zero (e.g. outside the eligible set)
    w = lambda p, c: sample_weights(off, lab, counts, p, c, None, np.empty(6)).tolist()  # noqa: E731
    assert w(0.5, "sum") == [0.5, 1.5, 0.5, 0.5, 0.0, 0.0]
    assert w(0.5, "mean") == [0.5, 0.75, 0.5, 0.5, 0.0, 0.0]
    assert w(0.5, "max") == [0.5, 1.0, 0.5, 0.5, 0.0, 0.0]
    assert w(0.0, "sum") == [0.25, 1.25, 0.25, 0.25, 0.0, 0.0]
    assert w(1.0, "sum") == [1.0, 2.0, 1.0, 1.0, 0.0, 0.0]  # power 1 counts classes; natural does not
    assert w(None, "sum") == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("sampling,a", [("sqrt", 0.5), ("uniform", 0.0), ("power:0.25", 0.25), ("power:1", 1.0)])
def test_single_label_class_mass_is_count_to_the_power(sampling, a):
    """Tag-first reading of the formula: with one class per image, class c's total weight is n_c^a."""
    r = np.random.default_rng(5)
    labels = r.integers(0, 12, 2000).astype(np.int32)
    off = np.arange(2001, dtype=np.int64)
    w = compute_weights(off, labels, 12, sampling)
    n = np.bincount(labels, minlength=12)
    np.testing.assert_allclose(np.bincount(labels, weights=w, minlength=12), n.astype(float) ** a, rtol=1e-12)


def test_compute_weights_counts_only_eligible_images():
    off, lab = csr([[0], [0], [0], [0], [1]])
    eligible = np.array([True, True, False, False, True])
    w = compute_weights(off, lab, 2, "uniform", eligible=eligible)
    assert w.tolist() == [0.5, 0.5, 0.0, 0.0, 1.0]


def test_weights_reject_bad_names_and_values():
    off, lab = csr([[0]])
    with pytest.raises(ValueError, match="'sqrtt'.*natural"):
        compute_weights(off, lab, 1, "sqrtt")
    with pytest.raises(ValueError, match="power:A"):
        sampling_power("power:-1")
    with pytest.raises(ValueError, match="combine='median'.*sum"):
        compute_weights(off, lab, 1, "sqrt", combine="median")
    with pytest.raises(ValueError, match="power=nan"):
        sample_weights(off, lab, np.ones(1, np.int64), float("nan"), "sum", None, np.empty(1))
    with pytest.raises(ValueError, match="outside the class range"):
        compute_weights(off, np.array([3], np.int32), 2, "sqrt")


def test_weights_of_empty_dataset():
    off, lab = csr([])
    assert compute_weights(off, lab, 4, "sqrt").shape == (0,)
