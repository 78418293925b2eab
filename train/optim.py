"""The optimizer of a run: SGD with (Nesterov) momentum for convolutional nets, AdamW for ViTs, with
weight decay optionally kept off biases, normalisation layers and ViT's class token and position
embedding (the usual transformer practice: decaying them only pulls scale and offsets towards zero).
"""

from __future__ import annotations

import torch
from tagstream.train.config import OptimConfig

NO_DECAY_NAMES = ("class_token", "pos_embedding")  # torchvision ViT's extra 1-D-like parameters


def param_groups(model: torch.nn.Module, config: OptimConfig) -> list[dict]:
    """One group with the configured weight decay, and (decay_norm_and_bias=false) one without it for every
    parameter with fewer than 2 dimensions (biases, norm scales) or named in NO_DECAY_NAMES."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if config.decay_norm_and_bias:
        return [{"params": [p for _, p in params], "weight_decay": config.weight_decay}]
    plain = [p for n, p in params if p.ndim < 2 or n.rsplit(".", 1)[-1] in NO_DECAY_NAMES]
    ids = {id(p) for p in plain}
    decayed = [p for _, p in params if id(p) not in ids]
    return [{"params": decayed, "weight_decay": config.weight_decay}, {"params": plain, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, config: OptimConfig, *, lr: float) -> torch.optim.Optimizer:
    """The optimizer named by config.name over the model's parameters, at peak learning rate lr."""
    groups = param_groups(model, config)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.name == "adamw":
        b1, b2 = config.betas
        return torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=config.eps)
    raise ValueError(f"optim.name={config.name!r} is not one of ('sgd', 'adamw')")


def clip_gradients(model: torch.nn.Module, max_norm: float) -> torch.Tensor | None:
    """Scale the gradients so their global L2 norm is at most max_norm (0 = off); returns the norm before
    clipping, still on the device (no CPU-GPU sync here)."""
    if max_norm <= 0:
        return None
    return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
