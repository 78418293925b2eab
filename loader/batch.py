"""What a loader yields and the narrow interface the trainer sees (imports no DALI, no torch at module level).

A Loader yields Batch(images, targets, indices) per step:
  images   CPU: torch.uint8 (B, H, W, 3), normalisation left to the model side (see normalize_images)
           GPU: torch.float32 (B, 3, H, W) on cuda:device_id, already normalised with IMAGENET_MEAN/STD
  targets  "soft": float32 (B, C) rows summing to 1 (1/k on each of k classes)
           "multihot": float32 (B, C) of 0/1
           "sparse": tuple (int64 (B, K) class ids padded with -1, float32 (B, K) weights padded with 0)
  indices  torch.int64 (B,) global dataset indices of the images (CPU)
Train: every batch full, len(loader) batches on every rank. Eval: each image once, in dataset order;
a rank's last batch may be shorter (padding is dropped), every rank still yields len(loader) batches.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple, Protocol

from tagstream.loader.config import LoaderConfig

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


class Batch(NamedTuple):
    images: Any
    targets: Any
    indices: Any


class Loader(Protocol):
    config: LoaderConfig
    num_classes: int
    normalized: bool  # True when images arrive normalised float NCHW (GPU path)

    def __iter__(self) -> Iterator[Batch]: ...
    def __len__(self) -> int: ...  # batches per epoch, identical on every rank
    def set_epoch(self, epoch: int) -> None: ...
    def state_dict(self) -> dict: ...  # {"epoch", "step", ...}: where the next batch comes from
    def load_state_dict(self, state: dict) -> None: ...
    def close(self) -> None: ...


def normalize_images(images: Any, *, device: Any = None, dtype: Any = None, channels_last: bool = False) -> Any:
    """CPU batches -> what a model eats: uint8 (B, H, W, 3) -> float (B, 3, H, W) normalised with
    IMAGENET_MEAN/STD, moved to `device` (default: where they are) as `dtype` (default float32);
    channels_last=True returns the torch.channels_last memory format. Already-normalised float NCHW
    batches (the GPU path) are only moved and cast."""
    import torch

    dtype = dtype or torch.float32
    if images.dtype == torch.uint8:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (B, H, W, 3), got {tuple(images.shape)}")
        x = images.to(device=device, non_blocking=True).permute(0, 3, 1, 2).float()
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    else:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"float images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = images.to(device=device, non_blocking=True)
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
