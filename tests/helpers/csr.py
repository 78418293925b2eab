"""Small CSR label arrays (offsets, labels) for kernel tests: random ones and ones written out by hand."""

from __future__ import annotations

import numpy as np


def random_csr(n: int, num_classes: int, seed: int, max_k: int = 5):
    """n images with 0..max_k sorted unique classes each (about 1 in 6 with none)."""
    r = np.random.default_rng(seed)
    k = r.integers(0, max_k + 1, n)
    k = np.minimum(k, num_classes)
    offsets = np.concatenate([[0], np.cumsum(k)]).astype(np.int64)
    labels = np.concatenate([np.sort(r.choice(num_classes, kk, replace=False)) for kk in k] or [np.zeros(0)]).astype(
        np.int32
    )
    return offsets, labels


def csr(rows: list[list[int]]):
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    labels = np.array([c for r in rows for c in r], dtype=np.int32)
    return offsets, labels
