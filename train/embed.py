"""Export the pooled features of every image of a dataset, in dataset order, with their indices.

Under torchrun each rank embeds its contiguous share (the eval loader's split), writes a part file,
and rank 0 joins the parts after a barrier (gloo: only counts are exchanged, never features). Rows are written
as they come (train/embed_io.py EmbeddingWriter), so a rank holds one batch of features, and the join one part.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tagstream.loader import build_loader
from tagstream.loader.data import Dataset, is_url
from tagstream.train.embed_io import EmbeddingWriter, check_suffix, join_parts, part_path
from tagstream.train.features import eval_config, iter_features
from tagstream.train.transfer import DEVICES, WEIGHTS, load_backbone


@dataclass(frozen=True)
class EmbedConfig:
    data: str
    out: str  # .npy (indices beside it as .indices.npy), .npz or .safetensors
    checkpoint: str | None = None
    model: str | None = None  # architecture of a random-initialised backbone when there is no checkpoint
    vocab: str | None = None  # the loader needs one (labels are not used); default: the checkpoint's, else the first
    image_size: int | None = None  # default: the checkpoint's training size
    batch_size: int = 64
    workers: int = 1
    threads: int = 2
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    weights: str = "model"  # of the checkpoint: "model", or "ema" (the moving average of a run with optim.ema)
    content_box: bool = False  # centre crop inside each image's content box (uniform borders cut), as dedup embeds

    def __post_init__(self) -> None:
        check_suffix(self.out)
        if self.weights not in WEIGHTS:
            raise ValueError(f"weights={self.weights!r} is not one of {WEIGHTS}")
        if self.device not in DEVICES:
            raise ValueError(f"device={self.device!r} is not one of {DEVICES}")
        if self.checkpoint is None and self.model is None:
            raise ValueError("give a checkpoint, or a model name for a random-initialised backbone")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")


def _pick_vocab(dataset: Dataset, wanted: str | None, checkpoint_vocab: str | None) -> str:
    names = dataset.vocab_names()
    if wanted is not None:
        return wanted  # Vocab() names the known ones if it is missing
    if checkpoint_vocab in names:
        return checkpoint_vocab
    if not names:
        raise ValueError(
            f"{dataset.root} has no vocabulary; the loader needs one: `tagstream vocab {dataset.root} --name all`"
        )
    return names[0]


def _rank_world(rank: int | None, world: int | None) -> tuple[int, int]:
    if rank is None:
        rank = int(os.environ.get("RANK", 0))
    if world is None:
        world = int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise ValueError(f"rank={rank} must be in [0, world={world})")
    return rank, world


def embed(cfg: EmbedConfig, *, rank: int | None = None, world: int | None = None) -> dict:
    """Embed every image the eval loader yields; returns a summary (on rank 0 after the join).

    rank/world default to torchrun's RANK/WORLD_SIZE; with world > 1 a gloo process group is
    started (from the torchrun environment) if none is, used for barriers only.
    """
    rank, world = _rank_world(rank, world)
    started_group = False
    if world > 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
        started_group = True
    try:
        return _embed(cfg, rank, world)
    finally:
        if started_group:
            torch.distributed.destroy_process_group()


def _embed(cfg: EmbedConfig, rank: int, world: int) -> dict:
    from tagstream.train.checkpoint import load_checkpoint

    start = time.perf_counter()
    dataset = Dataset(cfg.data)
    ckpt_vocab = None
    if cfg.checkpoint is not None:
        ckpt_vocab = load_checkpoint(cfg.checkpoint)["config"]["data"]["vocab"]
    vocab = _pick_vocab(dataset, cfg.vocab, ckpt_vocab)
    if cfg.device == "auto":
        device = (
            torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
    else:
        device = torch.device(cfg.device, int(os.environ.get("LOCAL_RANK", 0)) if cfg.device == "cuda" else None)
    net, info = load_backbone(
        cfg.checkpoint, model=cfg.model, image_size=cfg.image_size, seed=cfg.seed, weights=cfg.weights
    )
    net.to(device)
    gpu = device.type == "cuda"
    lcfg = eval_config(
        cfg.data,
        vocab,
        image_size=info["image_size"],
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        threads=cfg.threads,
        device="gpu" if gpu else "cpu",
        device_id=device.index if gpu else None,
        content_box=cfg.content_box,
    )
    metadata = {
        "checkpoint": str(cfg.checkpoint),
        "model": info["model"],
        "image_size": str(info["image_size"]),
        "dataset": cfg.data if is_url(cfg.data) else str(Path(cfg.data).resolve()),
        "source": info["source"],
    }
    # rows go to the file as they come: memory is a batch, not N x D (docs/scale.md, "Rehearsal at 10^6")
    loader = build_loader(lcfg, rank, world)
    try:
        with EmbeddingWriter(cfg.out if world == 1 else part_path(cfg.out, rank, world), metadata=metadata) as out:
            batches = iter_features(net, loader, device=device, progress=cfg.progress and rank == 0, desc="embed")
            for features, indices in batches:
                out.append(features, indices)
            images, dim = out.rows, out.dim or 0
    finally:
        loader.close()
    if world > 1:
        counts = torch.tensor([images], dtype=torch.int64)
        torch.distributed.all_reduce(counts)  # also the barrier: every part is on disk after it
        images = int(counts)
        if rank == 0:  # an eval loader with split "all" and no masks covers every image
            expected = np.arange(dataset.num_images, dtype=np.int64)
            images, dim = join_parts(cfg.out, world, expected=expected, metadata=metadata)
        torch.distributed.barrier()  # the joined file exists before any rank returns
    return {
        "out": str(cfg.out),
        "images": images,
        "feature_dim": int(dim),
        "world": world,
        "vocab": vocab,
        "model": info["model"],
        "image_size": info["image_size"],
        "seconds": round(time.perf_counter() - start, 2),
    }
