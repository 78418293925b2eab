"""The narrow interface between loader and trainer. Imports no DALI at module level: train/ uses
only this module, and build_loader imports the DALI pipeline when called.

A Loader yields Batch(images, targets, indices) per step:
  images   CPU: torch.uint8 (B, H, W, 3), normalisation left to the model side (see normalize_images)
           GPU: torch.float32 (B, 3, H, W) on cuda:device_id, already normalised with IMAGENET_MEAN/STD
  targets  "soft": float32 (B, C) rows summing to 1 (1/k on each of k classes)
           "multihot": float32 (B, C) of 0/1
           "sparse": tuple (int64 (B, K) class ids padded with -1, float32 (B, K) weights padded with 0)
  indices  int64 (B,) global dataset indices of the images
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple, Protocol

from .config import LoaderConfig

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
