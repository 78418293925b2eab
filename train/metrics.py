"""Hashtag-prediction metrics on a held-out split: precision@k and mean average precision over classes.

Definitions (ties broken by the lower class / image index, i.e. a stable sort on descending score):
  precision@k  for each image with at least one positive class, |top-k predicted classes ∩ its classes| / k,
               averaged over those images (an image with fewer than k tags cannot reach 1).
  AP of class c  over the images ranked by their score for c, the mean over c's positive images of the
               precision at that image's rank (no interpolation; sklearn's average_precision_score).
  mAP          the mean of AP over classes with at least one positive image; NaN if there is none.
Exact and O(N C log N): meant for evaluation splits, not for scoring a billion images.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def _check(scores: NDArray[np.floating], positives: NDArray[np.bool_]) -> None:
    if scores.ndim != 2 or scores.shape != positives.shape:
        raise ValueError(f"scores {scores.shape} and positives {positives.shape} must both be (N, C)")


def precision_at_k(scores: NDArray[np.floating], positives: NDArray[np.bool_], k: int) -> float:
    """Mean over images with >= 1 positive of (number of the k top-scored classes that are positive) / k."""
    scores, positives = np.asarray(scores), np.asarray(positives, dtype=bool)
    _check(scores, positives)
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k={k} must be in [1, number of classes {scores.shape[1]}]")
    keep = positives.any(axis=1)
    if not keep.any():
        return float("nan")
    top = np.argsort(-scores[keep], axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(positives[keep], top, axis=1).sum(axis=1)
    return float(np.mean(hits / k))


def average_precision_per_class(scores: NDArray[np.floating], positives: NDArray[np.bool_]) -> NDArray[np.float64]:
    """AP of every class (C,); NaN for a class with no positive image."""
    scores, positives = np.asarray(scores), np.asarray(positives, dtype=bool)
    _check(scores, positives)
    order = np.argsort(-scores, axis=0, kind="stable")
    hit = np.take_along_axis(positives, order, axis=0)
    precision = np.cumsum(hit, axis=0) / np.arange(1, scores.shape[0] + 1)[:, None]
    n_pos = hit.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, (precision * hit).sum(axis=0) / n_pos, np.nan)


def mean_average_precision(scores: NDArray[np.floating], positives: NDArray[np.bool_]) -> float:
    """Mean AP over classes with at least one positive image."""
    ap = average_precision_per_class(scores, positives)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def hashtag_metrics(scores: NDArray[np.floating], positives: NDArray[np.bool_]) -> dict[str, float]:
    """{"precision@1", "precision@5" (when >= 5 classes), "mAP", "images"} of an evaluation split."""
    out = {"precision@1": precision_at_k(scores, positives, 1)}
    if scores.shape[1] >= 5:
        out["precision@5"] = precision_at_k(scores, positives, 5)
    out["mAP"] = mean_average_precision(scores, positives)
    out["images"] = float(scores.shape[0])
    return out
