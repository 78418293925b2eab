"""Stage hand-off (`tagstream train --init CHECKPOINT`, `model.init`): a run starts from another run's encoder.

Only the backbone travels: the classifier head of a hashtag run and the decoder of an MAE run are dropped, the new
run's own head starts at random. The architecture (model name, hence patch size) must match; a ViT's position
embedding is interpolated when the image size differs (models.adapt_state). Any other misfit (a missing or extra
weight, a shape) is refused with one line naming it, before a step is taken.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tagstream.train.checkpoint import load_checkpoint
from tagstream.train.models import adapt_state, head_name, patch_size

ENCODER = "encoder."  # an MAE model's encoder weights (train/mae.py) carry this prefix


def objective_of(state: dict) -> str:
    """The objective a checkpoint was trained with ("hashtags" for checkpoints from before objectives existed)."""
    model = state.get("config", {}).get("model", {})
    return str(model.get("objective", "hashtags")) if isinstance(model, dict) else "hashtags"


def backbone_weights(state: dict) -> dict[str, torch.Tensor]:
    """A checkpoint's weights as the plain model's (an MAE run's encoder with its prefix stripped, its decoder
    dropped; a hashtag run's model as saved, head included: the loader of these weights decides about the head)."""
    weights = state["model"]
    if objective_of(state) == "mae":
        return {k[len(ENCODER) :]: v for k, v in weights.items() if k.startswith(ENCODER)}
    return dict(weights)


def read_init(path: str | Path, *, model_name: str) -> dict:
    """The --init checkpoint, refused (ValueError, one line) when unreadable or of another architecture."""
    try:
        state = load_checkpoint(path)
    except ValueError as exc:
        raise ValueError(f"model.init: {exc}") from None
    if state["model_name"] != model_name:
        raise ValueError(
            f"model.init {path} holds a {state['model_name']!r} encoder, but this run builds {model_name!r}; "
            "--init needs the same architecture and patch size"
        )
    return state


def apply_init(backbone: nn.Module, state: dict, *, path: str | Path, model_name: str, image_size: int) -> dict:
    """Load state's encoder into backbone (a bare model as build_model makes it, or an MAE's .encoder), its head
    left as initialised; returns what was loaded: {"init": path, "objective", "weights", "position_embedding"}."""
    # a ViT's head is heads.* (an MAE encoder has none), a convolutional model's its classifier (fc)
    head = "heads" if patch_size(model_name) is not None else head_name(backbone)
    drop = f"{head}." if head else None
    weights = {k: v for k, v in backbone_weights(state).items() if drop is None or not k.startswith(drop)}
    before = weights.get("encoder.pos_embedding")
    try:
        weights = adapt_state(model_name, weights, image_size=image_size)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ValueError(f"model.init {path}: its position embedding cannot be resized ({exc})") from None
    own = {k: v for k, v in backbone.state_dict().items() if drop is None or not k.startswith(drop)}
    missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    shapes = [k for k in own if k in weights and tuple(own[k].shape) != tuple(weights[k].shape)]
    for what, keys in (
        ("lacks", missing),
        ("has weights this model does not", extra),
        ("has other shapes for", shapes),
    ):
        if keys:
            raise ValueError(
                f"model.init {path} does not fit {model_name}: it {what} {', '.join(keys[:4])}"
                + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
            )
    backbone.load_state_dict(weights, strict=False)
    resized = before is not None and tuple(before.shape) != tuple(weights["encoder.pos_embedding"].shape)
    return {
        "init": str(path),
        "objective": objective_of(state),
        "weights": len(weights),
        "position_embedding": "interpolated" if resized else "as saved",
    }
