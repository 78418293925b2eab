"""What one optimizer step needs besides the model: the device, gradient accumulation and clipping, channels-last
and bf16 autocast, and the batch's images and targets on the device (an MAE run's targets are its masks)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from tagstream.loader import normalize_images
from tagstream.train.config import TrainConfig
from tagstream.train.mae import MaskKeys


class Step:
    """What one optimizer step needs besides the model: the device side of the run."""

    def __init__(self, config: TrainConfig, device: torch.device, masks: MaskKeys | None = None):
        cuda = device.type == "cuda"
        self.masks = masks  # MAE: batches are keyed by their (epoch, loader step) and get their masks as targets
        self.device = device
        self.grad_accum = config.batch.grad_accum
        self.grad_clip = config.optim.grad_clip
        self.channels_last = cuda and config.run.channels_last
        # bf16 autocast only on GPU: on most CPUs bf16 convolutions are slower than float32 ones
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and config.run.bf16 else nullcontext()

    def inputs(self, batch: Any, at: tuple[int, int] | None = None) -> tuple[torch.Tensor, Any]:
        """The batch's images and targets on the device; an MAE run's targets are the masks of the batch the loader
        delivered at (epoch, step)."""
        images = normalize_images(batch.images, device=self.device, channels_last=self.channels_last)
        if self.masks is not None and at is not None:
            return images, self.masks.train(*at, images.shape[0]).to(self.device, non_blocking=True)
        t = batch.targets
        targets = (
            tuple(x.to(self.device, non_blocking=True) for x in t)
            if isinstance(t, tuple)
            else t.to(self.device, non_blocking=True)
        )
        return images, targets
