"""Targets kernels vs NumPy twins: soft (1/k), multi-hot, padded sparse with deterministic truncation."""

from __future__ import annotations

import numpy as np
import pytest

from tagstream.kernels.targets import (
    PAD_ID,
    dense_targets_ref,
    multi_hot,
    soft_targets,
    sparse_targets,
    sparse_targets_ref,
)
from tests.helpers.csr import csr, random_csr


@pytest.mark.parametrize("soft", [True, False])
def test_dense_match_twin(soft):
    off, lab = random_csr(200, 30, seed=1, max_k=6)
    idx = np.random.default_rng(2).integers(0, 200, 64)
    out = np.full((64, 30), 7.0, np.float32)
    (soft_targets if soft else multi_hot)(off, lab, idx, out)
    assert np.array_equal(out, dense_targets_ref(off, lab, idx, 30, soft=soft))
    k = np.diff(off)[idx]
    np.testing.assert_allclose(out.sum(1), np.where(k > 0, 1.0, 0.0) if soft else k, rtol=1e-6)


@pytest.mark.parametrize("max_labels", [1, 3, 8])
def test_sparse_match_twin(max_labels):
    off, lab = random_csr(200, 30, seed=3, max_k=6)
    idx = np.random.default_rng(4).integers(0, 200, 50)
    ids = np.zeros((50, max_labels), np.int64)
    w = np.ones((50, max_labels), np.float32)
    sparse_targets(off, lab, idx, ids, w)
    ref_ids, ref_w = sparse_targets_ref(off, lab, idx, max_labels)
    assert np.array_equal(ids, ref_ids) and np.array_equal(w, ref_w)


def test_edge_rows_by_hand():
    off, lab = csr([[], [4], [1, 2, 5]])
    idx = np.array([0, 1, 2, 2])
    soft = soft_targets(off, lab, idx, np.empty((4, 6), np.float32))
    assert soft[0].tolist() == [0.0] * 6  # no class: an all-zero row
    assert soft[1].tolist() == [0, 0, 0, 0, 1, 0]
    assert soft[2].tolist() == pytest.approx([0, 1 / 3, 1 / 3, 0, 0, 1 / 3])
    ids, w = sparse_targets(off, lab, idx, np.empty((4, 2), np.int64), np.empty((4, 2), np.float32))
    assert ids.tolist() == [[PAD_ID, PAD_ID], [4, PAD_ID], [1, 2], [1, 2]]  # truncation keeps the first K stored
    assert w.tolist() == [[0, 0], [1, 0], [0.5, 0.5], [0.5, 0.5]]
    empty = soft_targets(off, lab, np.zeros(0, np.int64), np.empty((0, 6), np.float32))
    assert empty.shape == (0, 6)


def test_bad_input_is_a_clear_error():
    off, lab = csr([[0], [3]])
    with pytest.raises(ValueError, match="image indices outside"):
        soft_targets(off, lab, np.array([2]), np.empty((1, 4), np.float32))
    with pytest.raises(ValueError, match="labels outside"):
        multi_hot(off, lab, np.array([1]), np.empty((1, 3), np.float32))
    with pytest.raises(ValueError, match="1-D with 2 entries"):
        soft_targets(off, lab, np.array([0]), np.empty((2, 4), np.float32))
    with pytest.raises(ValueError, match="float32"):
        soft_targets(off, lab, np.array([0]), np.empty((1, 4), np.float64))
    with pytest.raises(ValueError, match="K=0"):
        sparse_targets(off, lab, np.array([0]), np.empty((1, 0), np.int64), np.empty((1, 0), np.float32))
    with pytest.raises(ValueError, match="negative labels"):
        sparse_targets(
            off, np.array([0, -3], np.int32), np.array([1]), np.empty((1, 2), np.int64), np.empty((1, 2), np.float32)
        )
