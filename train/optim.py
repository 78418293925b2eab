"""The optimizer of a run: SGD with (Nesterov) momentum for convolutional nets, AdamW for ViTs, with
weight decay optionally kept off biases, normalisation layers and ViT's class token and position
embedding (the usual transformer practice: decaying them only pulls scale and offsets towards zero).
"""

from __future__ import annotations

import re

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


# the blocks that layer-wise LR decay counts, by parameter name (torchvision's ViT, ResNet/ResNeXt, RegNet)
_BLOCK = (
    re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\."),
    re.compile(r"^layer(\d+)\."),
    re.compile(r"^trunk_output\.block(\d+)\."),
)
_STEM = re.compile(r"^(conv_proj|class_token|encoder\.pos_embedding|conv1|bn1|stem)\b")


def layer_depths(model: torch.nn.Module) -> tuple[dict[str, int], int]:
    """Each parameter's depth for layer-wise learning-rate decay, and the depth of the head: the stem (ViT's
    patch projection, class token and position embedding; a ResNet's conv1/bn1; a RegNet's stem) is 0, block
    or stage i counts from 1 in order (ViT encoder layers, ResNet layer1-4, RegNet block1-4), and what follows
    them (final norm, pooling, the classifier) is one deeper than the last block. A model with none of these
    names is one layer: every depth equals the head's."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    depth: dict[str, int] = {}
    for name in names:
        for pattern in _BLOCK:
            found = pattern.match(name)
            if found:
                depth[name] = int(found.group(1)) + (1 if pattern is _BLOCK[0] else 0)
        if name not in depth and _STEM.match(name):
            depth[name] = 0
    head = max(depth.values(), default=-1) + 1
    return {n: depth.get(n, head) for n in names}, head


def layer_decay_groups(model: torch.nn.Module, lr: float, decay: float) -> list[dict]:
    """Parameter groups at lr * decay ** (head depth - depth) (layer_depths): the head learns at lr, each
    block below it `decay` times slower; decay 1 is one group at lr."""
    if not 0 < decay <= 1:
        raise ValueError(f"layer decay {decay} must be in (0, 1]")
    depths, head = layer_depths(model)
    params = dict(model.named_parameters())
    groups: dict[int, list] = {}
    for name, d in depths.items():
        groups.setdefault(head - d if decay < 1 else 0, []).append(params[name])
    return [{"params": ps, "lr": lr * decay**k} for k, ps in sorted(groups.items())]
