"""Low-shot transfer (as SWAG and MAWS report it): a linear probe fitted on k labelled images per class, drawn
several times with different seeds, scored on the whole eval set; top-1 as mean and standard deviation.

The features are the ones the full linear probe extracted, so every k and seed costs one small L-BFGS fit.
With one image per class there is no validation split to pick the L2 penalty from, so every fit uses one
fixed penalty (LowShotConfig.weight_decay) rather than a grid: the numbers stay comparable across k.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from numpy.typing import NDArray

from tagstream.train.probe import ProbeConfig, fit_linear_probe, topk_accuracy


@dataclass(frozen=True)
class LowShotConfig:
    shots: tuple[int, ...] = ()  # images per class, e.g. (1, 5, 10, 25); () = no low-shot evaluation
    seeds: int = 5  # draws of the k images per class for each k
    weight_decay: float = 1e-2  # L2 penalty of every low-shot probe (standardised features)
    max_iter: int = 100

    def __post_init__(self) -> None:
        if any(not isinstance(k, int) or k < 1 for k in self.shots) or len(set(self.shots)) != len(self.shots):
            raise ValueError(f"shots={self.shots} must be distinct whole numbers >= 1, e.g. (1, 5, 10, 25)")
        if self.seeds < 1 or self.weight_decay < 0 or self.max_iter < 1:
            raise ValueError(
                f"low-shot seeds={self.seeds} and max_iter={self.max_iter} must be >= 1, weight_decay={self.weight_decay} >= 0"
            )


@contextmanager
def _one_thread() -> Iterator[None]:
    """k x classes rows are a small problem: a second torch thread only spin-waits (measured: docs/costs.md), so
    the fits run on one and the setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def parse_shots(text: str) -> tuple[int, ...]:
    """ "1,5,10,25" -> (1, 5, 10, 25)."""
    try:
        shots = tuple(int(p) for p in str(text).split(",") if p.strip())
    except ValueError:
        raise ValueError(f"shots={text!r} must be comma-separated whole numbers, e.g. 1,5,10,25") from None
    LowShotConfig(shots=shots)
    return shots


def sample_shots(labels: NDArray[np.int64], k: int, *, num_classes: int, seed: int) -> NDArray[np.int64]:
    """Row indices of k images of every class, drawn without replacement (sorted); refuses a class with fewer."""
    rng = np.random.default_rng([seed, k])
    picked = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if members.size < k:
            raise ValueError(f"{k}-shot needs {k} training images of every class; class {c} has {members.size}")
        picked.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(picked)).astype(np.int64)


def low_shot(
    train_features: NDArray[np.floating],
    train_labels: NDArray[np.int64],
    eval_features: NDArray[np.floating],
    eval_labels: NDArray[np.int64],
    *,
    num_classes: int,
    config: LowShotConfig,
) -> dict[str, dict]:
    """{str(k): {"top1_mean", "top1_std", "top1": per seed, "seeds", "train_images"}} for every k in config.shots.

    Single-label only: labels are class ids (-1 = unlabelled, skipped); the std is over seeds (ddof=0 with one seed).
    """
    keep_tr, keep_ev = train_labels >= 0, eval_labels >= 0
    xtr, ytr = np.asarray(train_features)[keep_tr], np.asarray(train_labels)[keep_tr]
    xev, yev = np.asarray(eval_features)[keep_ev], np.asarray(eval_labels)[keep_ev]
    probe = ProbeConfig(weight_decays=(config.weight_decay,), max_iter=config.max_iter)
    out: dict[str, dict] = {}
    for k in config.shots:
        accs = []
        for seed in range(config.seeds):
            rows = sample_shots(ytr, k, num_classes=num_classes, seed=seed)
            with _one_thread():
                fitted = fit_linear_probe(xtr[rows], ytr[rows], num_classes=num_classes, task="single", config=probe)
            accs.append(topk_accuracy(fitted.scores(xev), yev, k=1))
        out[str(k)] = {
            "top1_mean": float(np.mean(accs)),
            "top1_std": float(np.std(accs, ddof=1 if len(accs) > 1 else 0)),
            "top1": [float(a) for a in accs],
            "seeds": config.seeds,
            "train_images": k * num_classes,
        }
    return out


def format_low_shot(results: dict[str, dict]) -> list[str]:
    """One line per backbone that has low-shot results: k-shot top-1 % mean ± std."""
    lines = []
    for name, r in results.items():
        shots = r.get("low_shot")
        if shots:
            cells = "  ".join(
                f"{k}-shot {100 * v['top1_mean']:.1f} ± {100 * v['top1_std']:.1f}" for k, v in shots.items()
            )
            lines.append(f"{name:<12}{cells}  (top-1 %, mean ± std over {next(iter(shots.values()))['seeds']} seeds)")
    return lines
