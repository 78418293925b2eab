"""The masked-autoencoder stage (`model.objective = "mae"`, He et al. 2022; MAWS's pre-pretraining, Singh et al.
2023): a torchvision ViT encodes only the visible patches, a lightweight decoder of torchvision's own encoder
blocks fills in mask tokens, and the loss is the mean squared error of the masked patches' pixels, each patch
normalised by its own mean and variance (MAE's norm_pix_loss).

Masks never touch an RNG state: `MaskKeys` asks kernels/masking.py for a pure function of (seed, epoch, step,
slot in the global batch), so a resumed run masks exactly as one that never stopped. The encoder's weights
keep the names of the ViT the hashtag stage builds (`encoder.` + its keys, no classifier head), which is
what `--init` and `transfer` read back (train/init.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.vision_transformer import EncoderBlock, VisionTransformer

from tagstream.kernels.masking import patch_masks
from tagstream.kernels.rng import stream_key
from tagstream.train import distributed as dd
from tagstream.train.config import ModelConfig
from tagstream.train.models import build_model

_TRAIN_WORD = 0x3AE7  # the masks' stream names, apart from every other stream of a run's seed
_HELD_OUT_WORD = 0x3AE8
ENCODER = "encoder."  # the prefix of the encoder's weights in an MAE model's state dict


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, L, patch * patch * 3), patches in the ViT's order (row-major over the grid)."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def per_image_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, norm_pix: bool = True
) -> torch.Tensor:
    """(B,) each image's mean over its masked patches of the per-patch mean squared error; target (B, L, P) patches,
    mask (B, L) True where masked. norm_pix: each target patch standardised by its own mean and (unbiased)
    variance, + 1e-6 (MAE's norm_pix_loss)."""
    target = target.float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6).sqrt()
    per_patch = ((pred.float() - target) ** 2).mean(dim=-1)
    m = mask.float()
    return (per_patch * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, norm_pix: bool = True) -> torch.Tensor:
    """The batch's loss: the mean of per_image_loss (every image masks as many patches, so this is also the mean
    over all masked patches, MAE's form)."""
    return per_image_loss(pred, target, mask, norm_pix=norm_pix).mean()


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """MAE's fixed 2-D sine-cosine position embedding (1, grid * grid, dim): half the channels encode the row,
    half the column, each as sin and cos at dim / 4 frequencies."""
    if dim % 4:
        raise ValueError(f"decoder width {dim} must be a multiple of 4 (sine-cosine position embedding)")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for coord in (rows.reshape(-1), cols.reshape(-1)):
        angle = coord[:, None] * omega[None, :]
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1).float()[None]


class MaskedAutoencoder(nn.Module):
    """A ViT encoder over the visible patches and a decoder predicting every patch; forward(images, mask) -> loss."""

    def __init__(
        self, encoder: VisionTransformer, *, decoder_dim: int, decoder_layers: int, decoder_heads: int, norm_pix: bool
    ):
        super().__init__()
        encoder.heads = nn.Sequential()  # no classifier: every parameter takes part in the loss (DDP needs it)
        self.encoder = encoder
        self.patch = encoder.patch_size
        self.grid = encoder.image_size // encoder.patch_size
        self.norm_pix = norm_pix
        self.decoder_embed = nn.Linear(encoder.hidden_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("decoder_pos", sincos_2d(decoder_dim, self.grid), persistent=False)
        self.decoder_blocks = nn.Sequential(
            *(EncoderBlock(decoder_heads, decoder_dim, 4 * decoder_dim, 0.0, 0.0) for _ in range(decoder_layers))
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch * self.patch * 3)

    @property
    def patches(self) -> int:
        return self.grid * self.grid

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class token + visible patch tokens after the encoder, the visible patches' positions (B, V))."""
        enc = self.encoder
        x = enc._process_input(images)
        b, length, width = x.shape
        if mask.shape != (b, length):
            raise ValueError(f"mask {tuple(mask.shape)} must be (batch, patches) = {(b, length)}")
        pos = enc.encoder.pos_embedding
        x = x + pos[:, 1:]
        visible = (~mask).nonzero()[:, 1].reshape(b, -1)  # every row masks the same count, in patch order
        x = torch.gather(x, 1, visible[:, :, None].expand(-1, -1, width))
        cls = (enc.class_token + pos[:, :1]).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1)
        return enc.encoder.ln(enc.encoder.layers(enc.encoder.dropout(x))), visible

    def decode(self, tokens: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Predicted pixels of every patch (B, L, patch * patch * 3) from the encoded visible tokens."""
        y = self.decoder_embed(tokens[:, 1:])
        b, _, width = y.shape
        full = self.mask_token.to(y.dtype).expand(b, self.patches, width)
        full = full.scatter(1, visible[:, :, None].expand(-1, -1, width), y)
        full = self.decoder_blocks(full + self.decoder_pos.to(full.dtype))
        return self.decoder_pred(self.decoder_norm(full))

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens, visible = self.encode(images, mask)
        pred = self.decode(tokens, visible)
        return mae_loss(pred, patchify(images, self.patch), mask, norm_pix=self.norm_pix)


def build_mae(model: ModelConfig, *, image_size: int) -> MaskedAutoencoder:
    """An MAE around a randomly initialised ViT named by model.name (refused for a convolutional model)."""
    encoder = build_model(model.name, 1, image_size=image_size)
    if not isinstance(encoder, VisionTransformer):
        raise ValueError(f"model.objective='mae' needs a ViT (model.name vit_*), not {model.name!r}")
    if model.decoder_dim % model.decoder_heads:
        raise ValueError(
            f"model.decoder_dim={model.decoder_dim} must be a multiple of model.decoder_heads={model.decoder_heads}"
        )
    return MaskedAutoencoder(
        encoder,
        decoder_dim=model.decoder_dim,
        decoder_layers=model.decoder_layers,
        decoder_heads=model.decoder_heads,
        norm_pix=model.norm_pix_loss,
    )


class MaskKeys:
    """The masks of a rank's batches: train batches by (seed, epoch, loader step, slot in the global batch; a rank's
    batch is its partitions' shares laid end to end, so slot = rank * per-rank batch + row whatever the world
    size), held-out images by (seed, dataset index)."""

    def __init__(self, *, seed: int, ratio: float, patches: int, rank: int, per_rank: int):
        self.seed, self.ratio, self.patches = seed, ratio, patches
        self.first = rank * per_rank

    def _masks(self, key: np.uint64, rows: np.ndarray) -> torch.Tensor:
        out = np.empty((rows.shape[0], self.patches), np.bool_)
        patch_masks(key, rows, self.ratio, out)
        return torch.from_numpy(out)

    def train(self, epoch: int, step: int, batch: int) -> torch.Tensor:
        rows = np.arange(self.first, self.first + batch, dtype=np.uint64)
        return self._masks(stream_key(self.seed, _TRAIN_WORD, epoch, step), rows)

    def held_out(self, indices: Any) -> torch.Tensor:
        return self._masks(stream_key(self.seed, _HELD_OUT_WORD), np.asarray(indices, dtype=np.uint64).reshape(-1))


@torch.no_grad()
def evaluate_mae(model: MaskedAutoencoder, loader: Any, *, run: Any, keys: MaskKeys, dist: dd.Dist) -> dict[str, float]:
    """The held-out reconstruction loss (each image once, its fixed mask), averaged over images; rank 0 gets it."""
    model.eval()
    loader.set_epoch(0)
    seen: dict[int, float] = {}
    for batch in loader:
        images, _ = run.inputs(batch)
        mask = keys.held_out(batch.indices).to(images.device)
        with run.autocast:
            tokens, visible = model.encode(images, mask)
            pred = model.decode(tokens, visible)
        losses = per_image_loss(pred, patchify(images, model.patch), mask, norm_pix=model.norm_pix)
        seen.update(zip(np.asarray(batch.indices).reshape(-1).tolist(), losses.cpu().tolist()))
    gathered = dd.gather_objects(seen, dist)
    model.train()
    if gathered is None:
        return {}
    merged = {k: v for part in gathered for k, v in part.items()}
    total = math.fsum(merged.values())
    return {"mae_loss": total / len(merged), "images": float(len(merged))} if merged else {}
