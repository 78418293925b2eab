"""The linear probe: a logistic-regression classifier fitted full-batch (L-BFGS) on frozen features.

Features are standardised with the training set's mean and standard deviation, so the L2 penalty
means the same thing for any backbone. The penalty is picked from a small grid on a stratified
validation split of the training features, then the probe is refitted on all of them. Full-batch
L-BFGS on a convex loss is deterministic and needs no learning rate; the trade-off is memory: the
whole feature matrix is held at once, which suits transfer sets of up to a few hundred thousand images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from tagstream.train.metrics import mean_average_precision

TASKS = ("single", "multi")


@dataclass(frozen=True)
class ProbeConfig:
    """How a linear probe is fitted. weight_decays is the L2 grid searched on a validation split."""

    weight_decays: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    val_fraction: float = 0.2
    max_iter: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.weight_decays or any(w < 0 for w in self.weight_decays):
            raise ValueError(f"weight_decays={self.weight_decays} must be a non-empty tuple of values >= 0")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction={self.val_fraction} must be in (0, 1)")
        if self.max_iter < 1:
            raise ValueError(f"max_iter={self.max_iter} must be >= 1")


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe: scores(x) = ((x - mean) / std) @ weight.T + bias."""

    mean: NDArray[np.float64]
    std: NDArray[np.float64]
    weight: NDArray[np.float64]  # (C, D)
    bias: NDArray[np.float64]  # (C,)
    weight_decay: float
    task: str
    val_scores: dict  # weight decay -> validation metric (top-1 or mAP) that chose it

    def scores(self, x: NDArray[np.floating]) -> NDArray[np.float64]:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        return z @ self.weight.T + self.bias


def _fit(z: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int, task: str):
    """Minimise mean loss + weight_decay / 2 * ||W||^2 with L-BFGS; returns (W, b) as tensors."""
    w = torch.zeros(num_classes, z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )
    loss_fn = (
        torch.nn.functional.cross_entropy if task == "single" else torch.nn.functional.binary_cross_entropy_with_logits
    )

    def closure():
        opt.zero_grad()
        loss = loss_fn(z @ w.T + b, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _targets(labels: NDArray, task: str, num_classes: int) -> torch.Tensor:
    if task == "single":
        return torch.as_tensor(np.asarray(labels, dtype=np.int64))
    return torch.as_tensor(np.asarray(labels, dtype=np.float64).reshape(-1, num_classes))


def stratified_split(labels: NDArray, *, fraction: float, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Indices (train, val): about `fraction` of each class goes to val, at least one image of a class
    with two or more stays in train. Multi-label rows are split at random (no stratification)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    n = labels.shape[0]
    if labels.ndim == 2:
        perm = rng.permutation(n)
        k = int(round(fraction * n))
        return np.sort(perm[k:]), np.sort(perm[:k])
    val = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = min(int(round(fraction * len(members))), len(members) - 1)
        val.append(members[:k])
    val_idx = np.sort(np.concatenate(val)).astype(np.int64) if val else np.zeros(0, np.int64)
    train_idx = np.setdiff1d(np.arange(n, dtype=np.int64), val_idx)
    return train_idx, val_idx


def fit_linear_probe(
    features: NDArray[np.floating],
    labels: NDArray,
    *,
    num_classes: int,
    task: str = "single",
    config: ProbeConfig = ProbeConfig(),
) -> LinearProbe:
    """Fit a probe. labels: int class ids (N,) for task "single", 0/1 multi-hot (N, C) for "multi"."""
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {TASKS}")
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be a 2-D array with at least 2 rows, got shape {x.shape}")
    labels = np.asarray(labels)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {x.shape[0]} feature rows")
    if task == "single" and labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)  # constant features stay zero after centring
    z = torch.as_tensor((x - mean) / std)
    y = _targets(labels, task, num_classes)

    val_scores: dict[float, float] = {}
    tr, va = stratified_split(labels, fraction=config.val_fraction, seed=config.seed)
    if len(config.weight_decays) > 1 and len(va) > 0:
        for wd in config.weight_decays:
            w, b = _fit(z[tr], y[tr], num_classes, wd, config.max_iter, task)
            s = (z[va] @ w.T + b).numpy()
            if task == "single":
                val_scores[wd] = topk_accuracy(s, labels[va], k=1)
            else:
                val_scores[wd] = mean_average_precision(s, labels[va] > 0)
        # ties go to the strongest penalty: the simpler model
        best = max(sorted(config.weight_decays, reverse=True), key=lambda wd: val_scores[wd])
    else:
        best = config.weight_decays[0]
    w, b = _fit(z, y, num_classes, best, config.max_iter, task)
    return LinearProbe(mean, std, w.numpy(), b.numpy(), best, task, {str(k): v for k, v in val_scores.items()})


def topk_accuracy(scores: NDArray[np.floating], labels: NDArray[np.integer], *, k: int) -> float:
    """Share of rows whose true class is among the k highest scores (k capped at the class count)."""
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def per_class_accuracy(
    scores: NDArray[np.floating], labels: NDArray[np.integer], num_classes: int
) -> NDArray[np.float64]:
    """Top-1 accuracy of each class over its own images (NaN for a class with no image)."""
    labels = np.asarray(labels, dtype=np.int64)
    correct = np.asarray(scores).argmax(axis=1) == labels
    hits = np.bincount(labels, weights=correct, minlength=num_classes)
    total = np.bincount(labels, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, hits / np.maximum(total, 1), np.nan)
