"""Model factory over torchvision builders only (no hand-written architectures), heads sized to the vocabulary.

Weights are never downloaded: every model starts from random initialisation, as in the paper's
hashtag pretraining. The WSL widths (ResNeXt-101 32x16d/32x32d/32x48d) are torchvision's ResNet class
with Bottleneck blocks and a wider group width, exactly how torchvision builds resnext101_32x8d.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.regnet import BlockParams, RegNet
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings


def _resnext101_wsl(width_per_group: int, *, num_classes: int, image_size: int) -> nn.Module:
    # ResNeXt-101 32xCd of Mahajan et al.: cardinality 32, C channels per group
    return ResNet(Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=width_per_group, num_classes=num_classes)


def _torchvision(builder: Callable[..., nn.Module], *, num_classes: int, image_size: int) -> nn.Module:
    return builder(weights=None, num_classes=num_classes)


def _vit(builder: Callable[..., nn.Module], *, num_classes: int, image_size: int) -> nn.Module:
    return builder(weights=None, num_classes=num_classes, image_size=image_size)


def _vit_tiny(*, num_classes: int, image_size: int) -> nn.Module:
    # ViT-B/16's structure at toy width (2 layers of 32, patch 8): the ViT recipes' CPU stand-in in tests
    return VisionTransformer(
        image_size=image_size,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=num_classes,
    )


def _regnet_y_tiny(*, num_classes: int, image_size: int) -> nn.Module:
    # ~50k parameters, widths 16/32/64 with squeeze-excitation: trains in a minute on 2 CPU cores at 64 px
    params = BlockParams.from_init_params(depth=6, w_0=16, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    return RegNet(params, num_classes=num_classes)


_TV = {
    name: partial(_torchvision, getattr(tvm, name))
    for name in (
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnext50_32x4d",
        "resnext101_32x8d",
        "resnext101_64x4d",
        "regnet_y_400mf",
        "regnet_y_800mf",
        "regnet_y_1_6gf",
        "regnet_y_3_2gf",
        "regnet_y_8gf",
        "regnet_y_16gf",
        "regnet_y_32gf",
        "regnet_y_128gf",
    )
}

# name -> builder(num_classes=, image_size=)
MODELS: dict[str, Callable[..., nn.Module]] = {
    **_TV,
    "resnext101_32x16d": partial(_resnext101_wsl, 16),
    "resnext101_32x32d": partial(_resnext101_wsl, 32),
    "resnext101_32x48d": partial(_resnext101_wsl, 48),
    "vit_b_16": partial(_vit, tvm.vit_b_16),
    "vit_b_32": partial(_vit, tvm.vit_b_32),
    "vit_l_16": partial(_vit, tvm.vit_l_16),
    "vit_h_14": partial(_vit, tvm.vit_h_14),
    "regnet_y_tiny": _regnet_y_tiny,
    "vit_tiny_8": _vit_tiny,
}


def build_model(name: str, num_classes: int, *, image_size: int = 224) -> nn.Module:
    """A randomly initialised model with a num_classes-way linear head (image_size matters only for ViT)."""
    if name not in MODELS:
        raise ValueError(f"model {name!r} is not one of {sorted(MODELS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be >= 1")
    patch = patch_size(name)
    if patch is not None:
        if image_size % patch:
            raise ValueError(f"image_size={image_size} must be a multiple of {name}'s patch size {patch}")
    return MODELS[name](num_classes=num_classes, image_size=image_size)


def patch_size(name: str) -> int | None:
    """A ViT's patch size from its name (vit_b_16 -> 16); None for a convolutional model."""
    return int(name.rsplit("_", 1)[1]) if name.startswith("vit_") else None


def adapt_state(name: str, state: dict[str, torch.Tensor], *, image_size: int) -> dict[str, torch.Tensor]:
    """A checkpoint's weights for `name` built at image_size: a ViT's position embedding is resized
    bicubically over the patch grid (the class token's entry kept), as for fine-tuning at 384 after
    pretraining at 224; a convolutional model's weights do not depend on the size and come back as given."""
    patch = patch_size(name)
    if patch is None:
        return state
    return interpolate_embeddings(image_size, patch, state, interpolation_mode="bicubic")


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel (or torch.compile), if wrapped."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _head_path(model: nn.Module) -> tuple[nn.Module, str]:
    """(parent module, attribute name) of the final classifier Linear."""
    model = _unwrap(model)
    if isinstance(getattr(model, "fc", None), nn.Linear):  # ResNet, ResNeXt, RegNet
        return model, "fc"
    heads = getattr(model, "heads", None)
    if heads is not None and isinstance(getattr(heads, "head", None), nn.Linear):  # ViT
        return heads, "head"
    raise ValueError(f"no known classifier head on {type(model).__name__} (expected .fc or .heads.head)")


def head_name(model: nn.Module) -> str | None:
    """The classifier's module path in the model's state dict ("fc", "heads.head"); None for a model without one."""
    try:
        parent, attr = _head_path(model)
    except ValueError:
        return None
    found = getattr(parent, attr)
    return next(name for name, module in _unwrap(model).named_modules() if module is found)


def head(model: nn.Module) -> nn.Linear:
    """The classifier Linear of a model built by build_model."""
    parent, attr = _head_path(model)
    return getattr(parent, attr)


def feature_dim(model: nn.Module) -> int:
    """Width of the pooled penultimate features (the head's input)."""
    return head(model).in_features


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the classifier for a freshly initialised num_classes-way Linear (same device and dtype); returns model."""
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be >= 1")
    parent, attr = _head_path(model)
    old: nn.Linear = getattr(parent, attr)
    new = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
    setattr(parent, attr, new)
    return model


def extract_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pooled penultimate features (B, feature_dim): the input the classifier head sees.

    Runs the full forward pass and captures the head's input with a hook, so it works for every
    architecture here without knowing its internals; the head's own cost is negligible.
    """
    captured: list[torch.Tensor] = []

    def grab(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        captured.append(inputs[0])

    handle = head(model).register_forward_pre_hook(grab)
    try:
        _unwrap(model)(images)
    finally:
        handle.remove()
    return captured[0]
