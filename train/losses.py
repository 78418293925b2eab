"""Multi-label losses for hashtag targets: softmax cross-entropy on 1/k soft targets (the paper's choice) or per-class sigmoid.

Both accept dense targets (B, C) or the loader's sparse form (ids (B, K) padded with -1, weights (B, K)),
so a 17k-class vocabulary never needs a dense target matrix for the softmax loss. Losses are computed
in float32 even under bf16 autocast: log-softmax over thousands of classes loses too much in bf16.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Union

import torch
import torch.nn.functional as F

Targets = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]

LOSSES = ("softmax", "sigmoid")


def soft_cross_entropy(logits: torch.Tensor, targets: Targets) -> torch.Tensor:
    """mean over the batch of -sum_c t_c log softmax(logits)_c; t is a distribution (1/k on k tags)."""
    logp = F.log_softmax(logits.float(), dim=1)
    if isinstance(targets, tuple):
        ids, weights = targets
        # padded ids are -1 with weight 0: gather any valid column, the zero weight removes it
        picked = logp.gather(1, ids.clamp(min=0))
        return -(weights.float() * picked).sum(dim=1).mean()
    return -(targets.float() * logp).sum(dim=1).mean()


def _dense_multi_hot(logits: torch.Tensor, targets: Targets) -> torch.Tensor:
    if isinstance(targets, tuple):
        ids, weights = targets
        dense = torch.zeros_like(logits, dtype=torch.float32)
        valid = (ids >= 0) & (weights > 0)
        rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(ids)
        dense[rows[valid], ids[valid]] = 1.0
        return dense
    return (targets > 0).float()


def sigmoid_bce(logits: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Per-class binary cross-entropy with a class positive when its target is > 0: summed over
    classes, averaged over the batch (a mean over classes would shrink every gradient by 1/C)."""
    y = _dense_multi_hot(logits, targets)
    return F.binary_cross_entropy_with_logits(logits.float(), y, reduction="sum") / logits.shape[0]


def smoothed_cross_entropy(logits: torch.Tensor, targets: Targets, *, smoothing: float) -> torch.Tensor:
    """soft_cross_entropy against (1 - e) t + e / C (label smoothing): (1 - e) CE(t) + e mean_c(-log p_c)."""
    uniform = -F.log_softmax(logits.float(), dim=1).mean(dim=1).mean()
    return (1.0 - smoothing) * soft_cross_entropy(logits, targets) + smoothing * uniform


def build_loss(name: str, *, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, Targets], torch.Tensor]:
    if label_smoothing and name != "softmax":
        raise ValueError(f"label_smoothing={label_smoothing} needs the softmax loss, not {name!r}")
    if name == "softmax":
        return partial(smoothed_cross_entropy, smoothing=label_smoothing) if label_smoothing else soft_cross_entropy
    if name == "sigmoid":
        return sigmoid_bce
    raise ValueError(f"loss {name!r} is not one of {LOSSES}")


def loader_targets(loss: str, *, sparse: bool = False) -> str:
    """The loader's `targets` setting a loss wants: "soft" (1/k) or "multihot" (0/1), or "sparse"."""
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r} is not one of {LOSSES}")
    if sparse:
        return "sparse"
    return "soft" if loss == "softmax" else "multihot"
