"""Targets for a batch of sample indices: dense soft (1/k), multi-hot, or padded sparse (ids, weights).

Dense forms cost B·C floats; sparse costs B·K and is for vocabularies too large to densify.
An image with no class gets an all-zero row (soft, multi-hot) or all padding (sparse): the loss
must tolerate zero-sum rows, which the sampler never draws unless sampling ignores labels.
Sparse truncation is deterministic: an image with more than K classes keeps its first K in stored
order (labels are stored sorted ascending, so the K smallest class ids), weights 1/K over the kept.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

PAD_ID = -1


@numba.njit(cache=True)
def _dense_kernel(label_offsets, labels, indices, out, soft) -> int:
    """Writes rows of out; returns the number of bad entries (index or label out of range)."""
    n = label_offsets.shape[0] - 1
    num_classes = out.shape[1]
    bad = 0
    for b in range(indices.shape[0]):
        out[b, :] = 0.0
        i = indices[b]
        if i < 0 or i >= n:
            bad += 1
            continue
        lo = label_offsets[i]
        hi = label_offsets[i + 1]
        k = 0
        for p in range(lo, hi):
            c = labels[p]
            if c < 0 or c >= num_classes:
                bad += 1
            else:
                k += 1
        if k == 0:
            continue
        v = np.float32(1.0 / k) if soft else np.float32(1.0)
        for p in range(lo, hi):
            c = labels[p]
            if 0 <= c < num_classes:
                out[b, c] = v
    return bad


@numba.njit(cache=True)
def _sparse_kernel(label_offsets, labels, indices, out_ids, out_w) -> int:
    n = label_offsets.shape[0] - 1
    cap = out_ids.shape[1]
    bad = 0
    for b in range(indices.shape[0]):
        out_ids[b, :] = -1
        out_w[b, :] = 0.0
        i = indices[b]
        if i < 0 or i >= n:
            bad += 1
            continue
        k = 0
        for p in range(label_offsets[i], label_offsets[i + 1]):
            c = labels[p]
            if c < 0:
                bad += 1
            elif k < cap:
                out_ids[b, k] = c
                k += 1
        if k > 0:
            v = np.float32(1.0 / k)
            for t in range(k):
                out_w[b, t] = v
    return bad


def _check(label_offsets, labels, indices, rows: int) -> NDArray[np.int64]:
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or indices.shape[0] != rows:
        raise ValueError(f"indices must be 1-D with {rows} entries (the rows of out), got shape {indices.shape}")
    if label_offsets.dtype != np.int64 or labels.dtype != np.int32:
        raise ValueError(f"label_offsets/labels must be int64/int32, got {label_offsets.dtype}/{labels.dtype}")
    return indices


def _dense(label_offsets, labels, indices, out, soft: bool) -> NDArray[np.float32]:
    if out.ndim != 2 or out.dtype != np.float32:
        raise ValueError(f"out must be float32 (B, C), got {out.dtype} {out.shape}")
    indices = _check(label_offsets, labels, indices, out.shape[0])
    bad = _dense_kernel(label_offsets, labels, indices, out, soft)
    if bad:
        raise ValueError(
            f"{bad} image indices outside [0, {label_offsets.shape[0] - 1}) or labels outside [0, {out.shape[1]})"
        )
    return out


def soft_targets(
    label_offsets: NDArray[np.int64], labels: NDArray[np.int32], indices: NDArray[np.int64], out: NDArray[np.float32]
) -> NDArray[np.float32]:
    """out[b] = 1/k on each of the k classes of image indices[b] (zero row for an image with no class)."""
    return _dense(label_offsets, labels, indices, out, True)


def multi_hot(
    label_offsets: NDArray[np.int64], labels: NDArray[np.int32], indices: NDArray[np.int64], out: NDArray[np.float32]
) -> NDArray[np.float32]:
    """out[b, c] = 1 for each class c of image indices[b], else 0."""
    return _dense(label_offsets, labels, indices, out, False)


def sparse_targets(
    label_offsets: NDArray[np.int64],
    labels: NDArray[np.int32],
    indices: NDArray[np.int64],
    out_ids: NDArray[np.int64],
    out_w: NDArray[np.float32],
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Padded sparse soft targets: out_ids (B, K) class ids padded with -1, out_w (B, K) 1/k padded with 0.

    More than K classes: the first K in stored order are kept and weighted 1/K (see module docstring).
    """
    if out_ids.ndim != 2 or out_ids.dtype != np.int64 or out_w.shape != out_ids.shape or out_w.dtype != np.float32:
        raise ValueError(
            f"out_ids/out_w must be int64/float32 of the same shape (B, K), got {out_ids.dtype} {out_ids.shape}, {out_w.dtype} {out_w.shape}"
        )
    if out_ids.shape[1] < 1:
        raise ValueError(f"K={out_ids.shape[1]} must be >= 1")
    indices = _check(label_offsets, labels, indices, out_ids.shape[0])
    bad = _sparse_kernel(label_offsets, labels, indices, out_ids, out_w)
    if bad:
        raise ValueError(f"{bad} image indices outside [0, {label_offsets.shape[0] - 1}) or negative labels")
    return out_ids, out_w


def dense_targets_ref(
    label_offsets: NDArray[np.int64],
    labels: NDArray[np.int32],
    indices: NDArray[np.int64],
    num_classes: int,
    *,
    soft: bool,
) -> NDArray[np.float32]:
    """NumPy twin of soft_targets (soft=True) and multi_hot (soft=False)."""
    indices = np.asarray(indices, dtype=np.int64)
    k = (label_offsets[indices + 1] - label_offsets[indices]).astype(np.int64)
    rows = np.repeat(np.arange(indices.shape[0]), k)
    cols = labels[
        np.concatenate([np.arange(label_offsets[i], label_offsets[i + 1]) for i in indices] or [np.zeros(0, np.int64)])
    ]
    out = np.zeros((indices.shape[0], num_classes), np.float32)
    vals = (1.0 / k[rows]).astype(np.float32) if soft else np.float32(1.0)
    out[rows, cols] = vals
    return out


def sparse_targets_ref(
    label_offsets: NDArray[np.int64], labels: NDArray[np.int32], indices: NDArray[np.int64], max_labels: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """NumPy twin of sparse_targets."""
    ids = np.full((len(indices), max_labels), PAD_ID, np.int64)
    w = np.zeros((len(indices), max_labels), np.float32)
    for b, i in enumerate(np.asarray(indices, dtype=np.int64)):
        kept = labels[label_offsets[i] : label_offsets[i + 1]][:max_labels]
        ids[b, : len(kept)] = kept
        w[b, : len(kept)] = np.float32(1.0 / len(kept)) if len(kept) else 0
    return ids, w
