"""An exponential moving average of the weights (`optim.ema`, decay per optimizer step): after every step
ema = decay * ema + (1 - decay) * weights, buffers (BatchNorm statistics) averaged the same way. It is kept in
float32 on the training device beside the model, saved in every checkpoint under "ema" and restored on
resume, so a resumed run's average is bit for bit the one of a run never stopped. Evaluation during training
scores both; `transfer`/`embed --weights ema` use the average.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def build_ema(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """The average of `model` (the bare module, not DDP's wrapper), starting from its current weights; None when off."""
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def ema_weights(state: dict[str, Any], path: Any) -> dict[str, torch.Tensor]:
    """The averaged weights of a checkpoint, as a state dict of the model; ValueError if it has none."""
    ema = state.get("ema")
    if not isinstance(ema, dict):
        raise ValueError(
            f"{path}: the checkpoint has no EMA weights (train with optim.ema > 0, e.g. --set optim.ema=0.9999)"
        )
    return {k[len("module.") :]: v for k, v in ema.items() if k.startswith("module.")}
