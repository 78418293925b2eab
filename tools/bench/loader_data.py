"""Datasets for loader tests and `tagstream bench loader`, written straight to the on-disk format:
photo-like JPEGs (tools/synth/draw.py photo_like, 50-110 KB at 500x375 q90), flat JPEGs whose colour
encodes their index, and a plain writer fast enough for start-up measurements at 10^6 images."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.vocab import VocabClass, write_vocab
from tagstream.loader.data.writer import ShardWriter, write_manifest, write_tags
from tagstream.tools.synth.draw import photo_like

__all__ = [
    "photo_like",
    "encode_jpeg",
    "index_color",
    "decode_index_color",
    "write_dataset",
    "write_identity_vocab",
    "index_tags",
]


def encode_jpeg(pixels: NDArray[np.uint8], quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def index_color(index: int) -> tuple[int, int, int]:
    """The flat colour that encodes image `index` (recoverable after JPEG and resize: steps of 32)."""
    return (index % 8) * 32 + 16, (index // 8 % 8) * 32 + 16, (index // 64 % 8) * 32 + 16


def decode_index_color(pixels: NDArray[np.uint8]) -> int:
    """Inverse of index_color from a (H, W, 3) uint8 image (mean colour, rounded to the 32-grid); index mod 512."""
    rgb = np.asarray(pixels, np.float64).reshape(-1, 3).mean(0)
    r, g, b = (int(np.clip(np.round((c - 16) / 32), 0, 7)) for c in rgb)
    return r + 8 * g + 64 * b


def write_dataset(
    root: str | Path,
    records: Iterable[tuple[bytes, list[int], int, int]],
    *,
    num_images: int,
    shard_size: int,
    num_tags: int,
    progress: Callable[[int], None] | None = None,
) -> Dataset:
    """Write a dataset of (jpeg, raw tag ids, width, height) records through the format's writer (tags are
    named tag<i>, sources img<i>)."""
    root = Path(root)
    it = iter(records)
    shards = []
    tag_counts = np.zeros(num_tags, np.int64)
    for shard, start in enumerate(range(0, num_images, shard_size)):
        writer = ShardWriter(root, shard)
        try:
            for local in range(min(shard_size, num_images - start)):
                jpeg, tags, w, h = next(it)
                writer.add(jpeg, tags, f"img{start + local}", width=w, height=h)
                if progress is not None:
                    progress(1)
            shards.append(writer.commit())
        finally:
            writer.abort()
        np.add.at(tag_counts, np.asarray(writer.tag_ids, np.int64), 1)
    write_tags(root, [f"tag{t}" for t in range(num_tags)], tag_counts)
    write_manifest(
        root, shards, tags=num_tags, source={"kind": "synthetic", "description": "tagstream loader test/bench data"}
    )
    return Dataset(root)


def write_identity_vocab(dataset: Dataset, name: str = "v") -> None:
    """A vocabulary whose class c is raw tag c (labels = the raw tag CSR)."""
    offsets = dataset.global_array("tag_offsets")
    labels = dataset.global_array("tag_ids")
    counts = np.bincount(labels, minlength=len(dataset.tags)) if labels.size else np.zeros(len(dataset.tags), np.int64)
    classes = [VocabClass(t, text, int(counts[t]), (text,)) for t, text, _ in dataset.tags]
    write_vocab(dataset, name, classes, offsets, labels, {"identity": True}, {"classes": len(classes)})


def index_tags(index: int, num_tags: int) -> list[int]:
    """1 to 3 raw tags derived from an image index, so a test can check the labels delivered."""
    return sorted({index % num_tags, (index * 7 + 3) % num_tags, (index // 3) % num_tags})[: 1 + index % 3]
