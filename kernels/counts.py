"""Class counts over per-image CSR labels (n_c = eligible images carrying class c) and per-class weight sums.

One pass over the labels (O(nnz)), the count table (classes, small) stays in cache.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray


def check_csr(label_offsets: NDArray[np.int64], labels: NDArray[np.int32]) -> int:
    """Validate a CSR label index; returns the number of images. Cheap: O(1) checks, no pass over data."""
    if label_offsets.ndim != 1 or label_offsets.shape[0] < 1:
        raise ValueError(f"label_offsets must be 1-D with N+1 >= 1 entries, got shape {label_offsets.shape}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if label_offsets.dtype != np.int64 or labels.dtype != np.int32:
        raise ValueError(f"label_offsets/labels must be int64/int32, got {label_offsets.dtype}/{labels.dtype}")
    if int(label_offsets[0]) != 0 or int(label_offsets[-1]) != labels.shape[0]:
        raise ValueError(
            f"label_offsets must run from 0 to len(labels)={labels.shape[0]}, "
            f"got {int(label_offsets[0])}..{int(label_offsets[-1])}"
        )
    return label_offsets.shape[0] - 1


def check_eligible(eligible: NDArray[np.bool_] | None, num_images: int) -> NDArray[np.bool_]:
    """None -> empty array (the kernels' convention for "every image eligible")."""
    if eligible is None:
        return np.zeros(0, dtype=np.bool_)
    eligible = np.asarray(eligible)
    if eligible.dtype != np.bool_ or eligible.shape != (num_images,):
        raise ValueError(f"eligible must be bool of shape ({num_images},), got {eligible.dtype} {eligible.shape}")
    return eligible


@numba.njit(cache=True)
def _class_counts_kernel(label_offsets, labels, eligible, out) -> int:
    """Adds into out; returns the number of labels outside [0, len(out))."""
    num_classes = out.shape[0]
    check = eligible.shape[0] > 0
    bad = 0
    for i in range(label_offsets.shape[0] - 1):
        if check and not eligible[i]:
            continue
        for p in range(label_offsets[i], label_offsets[i + 1]):
            c = labels[p]
            if c < 0 or c >= num_classes:
                bad += 1
            else:
                out[c] += 1
    return bad


def class_counts(
    label_offsets: NDArray[np.int64],
    labels: NDArray[np.int32],
    eligible: NDArray[np.bool_] | None,
    out: NDArray[np.int64],
    *,
    accumulate: bool = False,
) -> NDArray[np.int64]:
    """out[c] = number of eligible images carrying class c (eligible None: all images). Returns out.

    accumulate=True adds to out instead (a pass over the images in chunks). A label outside
    [0, len(out)) is a ValueError naming how many there are.
    """
    n = check_csr(label_offsets, labels)
    eligible = check_eligible(eligible, n)
    if out.ndim != 1 or out.dtype != np.int64:
        raise ValueError(f"out must be a 1-D int64 array, got {out.dtype} {out.shape}")
    if not accumulate:
        out[:] = 0
    bad = _class_counts_kernel(label_offsets, labels, eligible, out)
    if bad:
        raise ValueError(f"{bad} labels lie outside the class range [0, {out.shape[0]})")
    return out


def class_counts_ref(
    label_offsets: NDArray[np.int64], labels: NDArray[np.int32], eligible: NDArray[np.bool_] | None, num_classes: int
) -> NDArray[np.int64]:
    """NumPy twin of class_counts."""
    n = label_offsets.shape[0] - 1
    image = np.repeat(np.arange(n), np.diff(label_offsets))
    keep = np.ones(labels.shape[0], bool) if eligible is None or len(eligible) == 0 else np.asarray(eligible)[image]
    return np.bincount(labels[keep], minlength=num_classes).astype(np.int64)


@numba.njit(cache=True)
def _class_weight_sums_kernel(label_offsets, labels, image_weights, out) -> int:
    num_classes = out.shape[0]
    bad = 0
    for i in range(label_offsets.shape[0] - 1):
        w = image_weights[i]
        if w == 0.0:
            continue
        for p in range(label_offsets[i], label_offsets[i + 1]):
            c = labels[p]
            if c < 0 or c >= num_classes:
                bad += 1
            else:
                out[c] += w
    return bad


def class_weight_sums(
    label_offsets: NDArray[np.int64],
    labels: NDArray[np.int32],
    image_weights: NDArray[np.float64],
    out: NDArray[np.float64],
    *,
    accumulate: bool = False,
) -> NDArray[np.float64]:
    """out[c] = sum of image_weights[i] over the images i carrying class c (e.g. expected draws per class).

    accumulate=True adds to out, in image order: chunks passed in order sum exactly as one pass would."""
    n = check_csr(label_offsets, labels)
    if image_weights.shape != (n,) or out.ndim != 1 or out.dtype != np.float64:
        raise ValueError(
            f"image_weights must have shape ({n},) and out be 1-D float64, got {image_weights.shape}, {out.dtype} {out.shape}"
        )
    if not accumulate:
        out[:] = 0.0
    bad = _class_weight_sums_kernel(label_offsets, labels, np.asarray(image_weights, dtype=np.float64), out)
    if bad:
        raise ValueError(f"{bad} labels lie outside the class range [0, {out.shape[0]})")
    return out


def class_weight_sums_ref(
    label_offsets: NDArray[np.int64], labels: NDArray[np.int32], image_weights: NDArray[np.float64], num_classes: int
) -> NDArray[np.float64]:
    """NumPy twin of class_weight_sums."""
    image = np.repeat(np.arange(label_offsets.shape[0] - 1), np.diff(label_offsets))
    return np.bincount(labels, weights=np.asarray(image_weights, dtype=np.float64)[image], minlength=num_classes)
