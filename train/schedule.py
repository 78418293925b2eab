"""Learning-rate schedule: linear warm-up, then cosine, step or constant; a pure function of the step.

The LR at step s depends only on s, so a resumed run recomputes it rather than trusting saved state,
and the schedule can be plotted or tested without an optimizer.
"""

from __future__ import annotations

import math
from functools import partial

import torch

from tagstream.train.config import ScheduleConfig


def lr_factor(
    step: int,
    *,
    total_steps: int,
    warmup_steps: int,
    kind: str,
    warmup_start_factor: float = 0.0,
    milestones: tuple[float, ...] = (),
    gamma: float = 0.1,
    final_factor: float = 0.0,
) -> float:
    """Multiplier of the peak LR before optimizer step `step` (0-based) of total_steps."""
    if step < warmup_steps:
        return warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps
    if kind == "constant":
        return 1.0
    if kind == "step":
        # milestones are fractions of the whole run (warm-up included), like epochs in torchvision's recipes
        return gamma ** sum(step >= m * total_steps for m in milestones)
    if kind == "cosine":
        span = max(total_steps - warmup_steps, 1)
        progress = min((step - warmup_steps) / span, 1.0)
        return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"schedule kind {kind!r} is not one of ('cosine', 'step', 'constant')")


def warmup_steps(config: ScheduleConfig, *, steps_per_epoch: int, total_steps: int) -> int:
    """Warm-up length in optimizer steps (warmup_steps if set, else warmup_epochs), at most the run."""
    steps = config.warmup_steps if config.warmup_steps is not None else round(config.warmup_epochs * steps_per_epoch)
    return min(steps, total_steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: ScheduleConfig, *, steps_per_epoch: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over lr_factor; call .step() once after every optimizer step."""
    fn = partial(
        lr_factor,
        total_steps=total_steps,
        warmup_steps=warmup_steps(config, steps_per_epoch=steps_per_epoch, total_steps=total_steps),
        kind=config.kind,
        warmup_start_factor=config.warmup_start_factor,
        milestones=tuple(config.milestones),
        gamma=config.gamma,
        final_factor=config.final_factor,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: fn(step))
