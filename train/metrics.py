"""Hashtag-prediction metrics on a held-out split: precision@k and mean average precision over classes.

Definitions (ties broken by the lower class / image index, i.e. a stable sort on descending score):
  precision@k  for each image with at least one positive class, |top-k predicted classes ∩ its classes| / k,
               averaged over those images (an image with fewer than k tags cannot reach 1).
  AP of class c  over the images ranked by their score for c, the mean over c's positive images of the
               precision at that image's rank (no interpolation; sklearn's average_precision_score).
  mAP          the mean of AP over classes with at least one positive image; NaN if there is none.
The functions are exact and O(N C log N) over scores in memory. HashtagMetrics accumulates the same figures batch
by batch with memory bounded whatever N: precision@k exactly (hits summed per batch), mAP over a systematic sample
of at most MAP_MAX_ENTRIES // C images (every s-th image in evaluation order, s doubling as the sample fills),
reported as "mAP_images" beside it; mAP is the one metric that needs every image's score for a class at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

COUNT_KEYS = ("images", "mAP_images")  # the results that count images (the others are rates)
MAP_MAX_ENTRIES = 1 << 24  # image x class scores mAP keeps (64 MiB of float32 and 16 MiB of flags, all ranks)
_AP_BLOCK_ENTRIES = 1 << 20  # image x class entries average_precision_per_class sorts at once (~40 MB of temporaries)


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
    return float(np.mean(_top_k_hits(scores[keep], positives[keep], k) / k))


def average_precision_per_class(scores: NDArray[np.floating], positives: NDArray[np.bool_]) -> NDArray[np.float64]:
    """AP of every class (C,); NaN for a class with no positive image."""
    scores, positives = np.asarray(scores), np.asarray(positives, dtype=bool)
    _check(scores, positives)
    n, c = scores.shape
    out = np.empty(c, np.float64)
    block = max(1, _AP_BLOCK_ENTRIES // max(n, 1))  # classes at a time: the temporaries stay ~8 bytes x block x n
    rank = np.arange(1, n + 1)[:, None]
    for lo in range(0, c, block):
        order = np.argsort(-scores[:, lo : lo + block], axis=0, kind="stable")
        hit = np.take_along_axis(positives[:, lo : lo + block], order, axis=0)
        precision = np.cumsum(hit, axis=0) / rank
        n_pos = hit.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[lo : lo + block] = np.where(n_pos > 0, (precision * hit).sum(axis=0) / n_pos, np.nan)
    return out


def mean_average_precision(scores: NDArray[np.floating], positives: NDArray[np.bool_]) -> float:
    """Mean AP over classes with at least one positive image."""
    ap = average_precision_per_class(scores, positives)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def hashtag_metrics(scores: NDArray[np.floating], positives: NDArray[np.bool_]) -> dict[str, float]:
    """{"precision@1", "precision@5" (when >= 5 classes), "mAP", "images"} of an evaluation split."""
    out = {f"precision@{k}": precision_at_k(scores, positives, k) for k in _ks(scores.shape[1])}
    out["mAP"] = mean_average_precision(scores, positives)
    out["images"] = float(scores.shape[0])
    return out


def _ks(classes: int) -> tuple[int, ...]:
    """The k of the precision@k reported: 1, and 5 where there are at least 5 classes."""
    return (1, 5) if classes >= 5 else (1,)


def _top_k_hits(scores: NDArray[np.floating], positives: NDArray[np.bool_], k: int) -> NDArray[np.float64]:
    """Per image: positives among its k top-scored classes (stable: ties to the lower class)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(positives, top, axis=1).sum(axis=1).astype(np.float64)


@dataclass
class HashtagMetrics:
    """hashtag_metrics accumulated batch by batch (see the module docstring): update() per batch, then merge() the
    other ranks' accumulators into rank 0's, then result(). Memory: the mAP sample, at most `max_entries` scores
    and flags (give each of W ranks max_entries // W so their union stays within the bound)."""

    classes: int
    max_entries: int = MAP_MAX_ENTRIES
    images: int = 0
    labelled: int = 0  # images with at least one positive class: precision@k's denominator
    hits: dict[int, float] = field(default_factory=dict)  # k -> sum over labelled images of hits / k
    stride: int = 1  # the sample keeps the evaluation positions that are multiples of stride
    sampled: int = 0
    pieces: list[tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.int64]]] = field(default_factory=list)

    @property
    def ks(self) -> tuple[int, ...]:
        return _ks(self.classes)

    @property
    def capacity(self) -> int:
        return max(1, self.max_entries // max(self.classes, 1))

    def update(self, scores: NDArray[np.floating], positives: NDArray[np.bool_]) -> None:
        scores, positives = np.asarray(scores, dtype=np.float32), np.asarray(positives, dtype=bool)
        _check(scores, positives)
        if scores.shape[1] != self.classes:
            raise ValueError(f"scores of {scores.shape[1]} classes, the metrics were made for {self.classes}")
        keep = positives.any(axis=1)
        for k in self.ks:
            self.hits[k] = self.hits.get(k, 0.0) + float(_top_k_hits(scores[keep], positives[keep], k).sum()) / k
        self.labelled += int(keep.sum())
        position = np.arange(self.images, self.images + scores.shape[0], dtype=np.int64)
        self.images += scores.shape[0]
        chosen = position % self.stride == 0
        self.pieces.append((scores[chosen], positives[chosen], position[chosen]))
        self.sampled += int(chosen.sum())
        while self.sampled > self.capacity:  # double the stride: half the sample, still spread over all positions
            self.stride *= 2
            self._compact(lambda pos: pos % self.stride == 0)
        if len(self.pieces) > 64:
            self._compact(lambda pos: slice(None))

    def _compact(self, rule) -> None:
        s, p, pos = (np.concatenate([piece[i] for piece in self.pieces]) for i in range(3))
        chosen = rule(pos)
        self.pieces = [(s[chosen], p[chosen], pos[chosen])]
        self.sampled = len(self.pieces[0][2])

    def merge(self, other: HashtagMetrics) -> None:
        """Add another rank's accumulator, after its last update: counts add up, the samples are joined."""
        if other.classes != self.classes:
            raise ValueError(f"cannot merge metrics of {other.classes} classes into {self.classes}")
        self.images += other.images
        self.labelled += other.labelled
        for k, v in other.hits.items():
            self.hits[k] = self.hits.get(k, 0.0) + v
        self.pieces += other.pieces
        self.sampled += other.sampled

    def result(self) -> dict[str, float]:
        """{"precision@1", "precision@5" (when >= 5 classes), "mAP", "images", "mAP_images"}."""
        out = {f"precision@{k}": self.hits.get(k, 0.0) / self.labelled if self.labelled else math.nan for k in self.ks}
        if self.sampled:
            out["mAP"] = mean_average_precision(*(np.concatenate([piece[i] for piece in self.pieces]) for i in (0, 1)))
        else:
            out["mAP"] = math.nan
        out["images"] = float(self.images)
        out["mAP_images"] = float(self.sampled)
        return out
