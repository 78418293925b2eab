"""Frozen-backbone feature extraction over an eval loader (every image once, centre crop, dataset
order), and downstream class labels matched across datasets by class name.

Features are gathered on the host as float32; one pass costs one forward per image. extract_dataset holds the
matrix (N x feature width), which a linear probe needs anyway; iter_features hands over one batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from tagstream.loader import LoaderConfig, normalize_images
from tagstream.train.models import extract_features


def eval_config(
    dataset: str,
    vocab: str,
    *,
    image_size: int,
    batch_size: int = 64,
    workers: int = 1,
    threads: int = 2,
    device: str = "cpu",
    device_id: int | None = None,
    split: str = "all",
    content_box: bool = False,
) -> LoaderConfig:
    """The loader settings of a feature pass: eval mode (centre crop, every image once, in order)."""
    return LoaderConfig(
        dataset=dataset,
        vocab=vocab,
        mode="eval",
        split=split,
        sampling="natural",
        batch_size=batch_size,
        image_size=image_size,
        workers=workers,
        threads=threads,
        device=device,
        device_id=device_id,
        targets="multihot",
        eval_content_box=content_box,
    )


def iter_features(
    model: torch.nn.Module, loader, *, device: torch.device, progress: bool = False, desc: str = "features"
) -> Iterator[tuple[NDArray[np.float32], NDArray[np.int64]]]:
    """(features (b, D) float32, dataset indices (b,) int64) of each batch the loader yields, in its order: a
    consumer that writes them as they come (`embed`) holds one batch, not the matrix."""
    from tagstream.loader import progress_bar

    model.eval()
    with progress_bar(total=len(loader), desc=desc, disable=not progress, unit="batch", leave=False) as bar:
        for batch in loader:
            with torch.no_grad():
                x = normalize_images(batch.images, device=device)
                features = extract_features(model, x).float().cpu().numpy()
            yield features, np.asarray(batch.indices, dtype=np.int64).reshape(-1)
            bar.update(1)


def extract_dataset(
    model: torch.nn.Module, loader, *, device: torch.device, progress: bool = False, desc: str = "features"
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """(features (n, D) float32, dataset indices (n,) int64) of every image the loader yields, in its order."""
    feats: list[np.ndarray] = []
    idx: list[np.ndarray] = []
    for f, i in iter_features(model, loader, device=device, progress=progress, desc=desc):
        feats.append(f)
        idx.append(i)
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return np.concatenate(feats).astype(np.float32, copy=False), np.concatenate(idx)


@dataclass(frozen=True)
class Labels:
    """Downstream labels of one dataset in a shared class space.

    single: class id per image (N,), -1 for an image with no class; multi: 0/1 (N, C).
    """

    class_names: tuple[str, ...]
    task: str  # "single" (every labelled image has exactly one class) or "multi"
    single: NDArray[np.int64] | None
    multi: NDArray[np.uint8]
    labelled: NDArray[np.bool_]


def vocab_labels(vocab, class_names: list[str] | tuple[str, ...]) -> NDArray[np.uint8]:
    """Multi-hot (N, C) over `class_names` from a Vocab's CSR, matching classes by name.

    A class of the vocab that is not in `class_names` is an error naming it: a downstream task whose
    eval set has classes the train set lacks cannot be scored.
    """
    names = vocab.class_names()
    position = {n: i for i, n in enumerate(class_names)}
    unknown = [n for n in names if n not in position]
    if unknown:
        raise ValueError(
            f"{vocab.dataset.root}: classes {unknown[:10]} are not among the {len(class_names)} training classes"
        )
    remap = np.array([position[n] for n in names], dtype=np.int64)
    offsets = np.asarray(vocab.label_offsets, dtype=np.int64)
    labels = np.asarray(vocab.labels, dtype=np.int64)
    out = np.zeros((offsets.shape[0] - 1, len(class_names)), dtype=np.uint8)
    rows = np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets))
    out[rows, remap[labels]] = 1
    return out


def make_labels(multi: NDArray[np.uint8], class_names: tuple[str, ...], *, task: str | None = None) -> Labels:
    """Labels from a multi-hot matrix; task detected when None (single when no image has two classes)."""
    per_image = multi.sum(axis=1)
    labelled = per_image > 0
    detected = "single" if (per_image <= 1).all() else "multi"
    task = task or detected
    if task == "single" and detected == "multi":
        raise ValueError(
            f"task='single' but {(per_image > 1).sum()} images carry more than one class; use task='multi'"
        )
    single = np.where(labelled, multi.argmax(axis=1), -1).astype(np.int64) if task == "single" else None
    return Labels(tuple(class_names), task, single, multi, labelled)
