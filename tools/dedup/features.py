"""Embedding features for de-duplication: the files `tagstream embed` writes (one file, or the per-rank parts
that together cover a dataset), checked against their dataset and L2-normalised block by block; or made
here by embedding a dataset with a checkpoint.

.npy files are memory-mapped and read in blocks, so a training set's features never need to fit in memory
at once; the trade-off is that a NaN or all-zero row deep in a large file is found only when its block is
searched (nothing is written before the whole join is done, so the error costs time, never a half mask).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data import Dataset
from tagstream.train.embed_io import check_suffix, indices_path, load_embeddings

# the cosine that `tagstream bench dedup --method embed` chose for the `make demo` checkpoint at a
# false-match rate of 1e-4 per pair; another model needs its own: the bench prints it (--target-fpr)
DEFAULT_THRESHOLD = 0.988


@dataclass(frozen=True)
class Features:
    """The features of one dataset as blocks of (features (n_k, D), dataset indices (n_k,)), every image
    of the dataset in exactly one row."""

    label: str  # the file names, for messages
    dim: int
    num_images: int
    blocks: tuple[tuple[np.ndarray, NDArray[np.int64]], ...]

    def chunks(self, rows: int) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        """(dataset indices, L2-normalised float32 rows) in chunks of at most `rows`."""
        for feats, idx in self.blocks:
            for start in range(0, feats.shape[0], rows):
                yield (
                    idx[start : start + rows],
                    self._normalised(feats[start : start + rows], idx[start : start + rows]),
                )

    def dense(self) -> NDArray[np.float32]:
        """All rows normalised, in dataset order (N, D): for the evaluation side, which is small."""
        out = np.zeros((self.num_images, self.dim), np.float32)
        for idx, x in self.chunks(1 << 16):
            out[idx] = x
        return out

    def take(self, indices: NDArray[np.int64]) -> NDArray[np.float32]:
        """Normalised rows of the given dataset indices, in their order."""
        out = np.zeros((indices.shape[0], self.dim), np.float32)
        for feats, idx in self.blocks:
            order = np.argsort(idx)
            pos = np.searchsorted(idx, indices, sorter=order)
            hit = (pos < idx.shape[0]) & (idx[order[np.minimum(pos, idx.shape[0] - 1)]] == indices)
            if hit.any():
                rows = order[pos[hit]]
                out[np.flatnonzero(hit)] = self._normalised(feats[rows], indices[hit])
        return out

    def _normalised(self, x: np.ndarray, idx: NDArray[np.int64]) -> NDArray[np.float32]:
        x = np.asarray(x, dtype=np.float32)
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            bad = idx[~finite]
            raise ValueError(
                f"{self.label}: the features of {bad.size} image(s) are not finite (NaN or inf), "
                f"first image {int(bad[0])}"
            )
        norms = np.linalg.norm(x, axis=1)
        if (norms == 0).any():
            bad = idx[norms == 0]
            raise ValueError(
                f"{self.label}: the features of {bad.size} image(s) are all zero (no direction to "
                f"compare), first image {int(bad[0])}"
            )
        return x / norms[:, None]


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise ValueError(f"features file {path} does not exist")
    if check_suffix(path) == ".npy":
        if not indices_path(path).is_file():
            raise ValueError(
                f"features file {path} has no indices beside it ({indices_path(path).name}, as `tagstream embed` writes)"
            )
        return np.load(path, mmap_mode="r"), np.load(indices_path(path))
    return load_embeddings(path)


def open_features(paths: Sequence[str | Path], dataset: Dataset) -> Features:
    """Features of `dataset` from one file or several parts; refuses a wrong shape or dtype, rows that do
    not cover the dataset's images exactly once, and parts of different dimensions."""
    paths = [Path(p) for p in paths]
    label = ", ".join(str(p) for p in paths) if len(paths) <= 3 else f"{paths[0]} and {len(paths) - 1} more"
    if not paths:
        raise ValueError(f"no features file given for {dataset.root}")
    if dataset.num_images == 0:
        raise ValueError(f"{dataset.root} has no images: there is nothing to compare")
    blocks, dims = [], set()
    seen = np.zeros(dataset.num_images, np.uint8)  # 1 byte per image: 3.5 GB at 3.5e9
    for p in paths:
        feats, idx = _read(p)
        if feats.ndim != 2 or feats.dtype.kind != "f":
            raise ValueError(
                f"{p}: features must be a 2-D float array (images x dimension), got {feats.dtype} {feats.shape}"
            )
        idx = np.asarray(idx)
        if idx.shape != (feats.shape[0],) or idx.dtype.kind not in "iu":
            raise ValueError(
                f"{p}: indices must be integers, one per feature row ({feats.shape[0]}), got {idx.dtype} {idx.shape}"
            )
        idx = idx.astype(np.int64)
        outside = (idx < 0) | (idx >= dataset.num_images)
        if outside.any():
            raise ValueError(
                f"{p}: image index {int(idx[outside][0])} is outside {dataset.root} "
                f"({dataset.num_images} images): features of another dataset?"
            )
        np.add.at(seen, idx, 1)
        dims.add(int(feats.shape[1]))
        blocks.append((feats, idx))
    if len(dims) != 1:
        raise ValueError(f"{label}: parts have different dimensions {sorted(dims)}")
    if not (seen == 1).all():
        missing, twice = np.flatnonzero(seen == 0), np.flatnonzero(seen > 1)
        raise ValueError(
            f"{label}: the features must cover every image of {dataset.root} ({dataset.num_images}) once: "
            f"{missing.size} missing (first {missing[:5].tolist()}), {twice.size} repeated (first {twice[:5].tolist()})"
        )
    return Features(label, dims.pop(), dataset.num_images, tuple(blocks))


@dataclass(frozen=True)
class EmbedOptions:
    """How `dedup --checkpoint` embeds a dataset (the settings of `tagstream embed`)."""

    checkpoint: str
    vocab: str | None = None  # the loader needs one (labels unused); default: the checkpoint's, else the first
    batch_size: int = 64
    workers: int = 1
    device: str = "auto"


def embed_dataset(dataset: str | Path, options: EmbedOptions, workdir: str | Path | None = None) -> Path:
    """Embed every image of `dataset` with the checkpoint (train.embed, as `tagstream embed` does) into a
    .npy file under workdir (a new temporary folder when None); returns its path."""
    from tagstream.train.embed import EmbedConfig, embed

    out = Path(workdir or tempfile.mkdtemp(prefix="tagstream-dedup-")) / f"{Path(dataset).resolve().name}.npy"
    embed(
        EmbedConfig(
            data=str(dataset),
            out=str(out),
            checkpoint=options.checkpoint,
            vocab=options.vocab,
            batch_size=options.batch_size,
            workers=options.workers,
            device=options.device,
            progress=False,
            content_box=True,  # borders cut, as for the pHash: a letterboxed copy embeds like its original
        ),
        rank=0,
        world=1,
    )
    return out


@dataclass(frozen=True)
class EmbedMethod:
    """The embedding method's inputs: feature files (the training set's, and one per evaluation set in
    --against order) or a checkpoint that embeds every dataset; the cosine threshold; the index kind."""

    threshold: float
    features: tuple[str, ...] = ()  # the training set's: one file or its per-rank parts
    against_features: tuple[str, ...] = ()
    embed: EmbedOptions | None = None
    index: str = "auto"

    def __post_init__(self) -> None:
        from tagstream.tools.dedup.knn import KINDS, check_threshold

        check_threshold(self.threshold)
        if self.index not in KINDS:
            raise ValueError(f"index kind {self.index!r} is not one of {KINDS}")
        given = bool(self.features or self.against_features)
        if self.embed is not None and given:
            raise ValueError("give either feature files (--features/--against-features) or --checkpoint, not both")
        if self.embed is None and not (self.features and self.against_features):
            raise ValueError(
                "the embedding method needs --features TRAIN_FILE and --against-features EVAL_FILE "
                "(from `tagstream embed`), or --checkpoint CKPT to embed both"
            )
