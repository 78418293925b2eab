"""Datasets for loader tests and `tagstream bench loader`, written straight to the on-disk format:
photo-like JPEGs (tools.synth_draw.photo_like, 50-110 KB at 500x375 q90), flat JPEGs whose colour
encodes their index, and a plain writer fast enough for start-up measurements at 10^6 images."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from numpy.typing import NDArray
from tagstream.loader import format as fmt
from tagstream.loader.dataset import Dataset
from tagstream.loader.vocab import VocabClass, write_vocab
from tagstream.tools.synth.draw import photo_like

__all__ = ["photo_like", "encode_jpeg", "index_color", "decode_index_color", "write_dataset", "write_identity_vocab", "index_tags"]


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
    """Write a dataset of (jpeg, raw tag ids, width, height) records following loader/format.py exactly."""
    import lmdb

    root = Path(root)
    (root / fmt.SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    (root / fmt.INDEX_DIR).mkdir(parents=True, exist_ok=True)
    it = iter(records)
    shards = []
    tag_counts = np.zeros(num_tags, np.int64)
    for shard, start in enumerate(range(0, num_images, shard_size)):
        n = min(shard_size, num_images - start)
        name = fmt.shard_name(shard)
        offsets = np.zeros(n + 1, np.int64)
        tag_ids: list[int] = []
        width = np.zeros(n, np.int32)
        height = np.zeros(n, np.int32)
        path = fmt.shard_path(root, name)
        env = lmdb.open(str(path), map_size=1 << 36, subdir=True, lock=False, sync=False, writemap=False)
        with env.begin(write=True) as txn:
            for local in range(n):
                jpeg, tags, w, h = next(it)
                tags = sorted(set(int(t) for t in tags))
                txn.put(fmt.encode_key(local), fmt.pack_record(jpeg, tags, f"img{start + local}"))
                tag_ids.extend(tags)
                offsets[local + 1] = len(tag_ids)
                width[local], height[local] = w, h
                if progress is not None:
                    progress(1)
        env.sync(True)
        env.close()
        ids = np.asarray(tag_ids, np.int32)
        np.add.at(tag_counts, ids, 1)
        arrays = {"tag_offsets": offsets, "tag_ids": ids, "width": width, "height": height, "phash": np.zeros(n, np.uint64)}
        for key, arr in arrays.items():
            fmt.save_npy_atomic(fmt.index_path(root, name, key), arr.astype(fmt.INDEX_ARRAYS[key]))
        data = path / "data.mdb"
        shards.append({"name": name, "images": n, "bytes": data.stat().st_size, "sha256": fmt.file_sha256(data)})
    with open(root / fmt.TAGS, "w", encoding="utf-8") as f:
        f.write("id\ttag\tcount\n")
        for t in range(num_tags):
            f.write(f"{t}\ttag{t}\t{tag_counts[t]}\n")
    fmt.write_json_atomic(
        root / fmt.MANIFEST,
        {"format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION, "images": num_images, "shards": shards,
         "source": "tagstream loader test/bench data", "tool_version": "0.1.0"},
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
