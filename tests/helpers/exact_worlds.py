"""Datasets with planted byte-identical copies, for the same-bytes check (tools/dedup/exact.py) and the digests
behind it: every image's pixels are noise seeded by where it comes from, so distinct images have distinct bytes."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.tools.bench.loader_data import encode_jpeg, write_dataset

N_TRAIN, SHARD = 60, 16  # 4 shards, the last one short
TRAIN_REPEATS = {40: 2}  # train image -> the train image whose bytes it repeats
EVAL_COPIES = ({0: 2, 1: 17, 3: 59, 5: 17}, {2: 33})  # per evaluation set: eval image -> train image it copies
N_EVAL = (8, 4)


def blake2b_64(image: bytes) -> int:
    """The digest's definition, written out here (the oracle of format.image_digest): BLAKE2b with an 8-byte digest,
    read little-endian."""
    return int.from_bytes(hashlib.blake2b(image, digest_size=8).digest(), "little")


def noise_jpeg(seed: int, side: int = 32) -> bytes:
    """A JPEG of noise seeded by `seed` (q95: a side of 128 gives ~20 KB)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return encode_jpeg(pixels, quality=95)


@dataclass(frozen=True)
class ExactWorlds:
    train: Path
    evals: tuple[Path, ...]


def _write(root: Path, images: list[bytes], shard_size: int, side: int) -> Dataset:
    records = ((image, [i % 3], side, side) for i, image in enumerate(images))
    return write_dataset(root, records, num_images=len(images), shard_size=shard_size, num_tags=3)


def build_exact_worlds(tmp: Path, *, n_train: int = N_TRAIN, shard_size: int = SHARD, side: int = 32) -> ExactWorlds:
    """A training set with TRAIN_REPEATS and evaluation sets with EVAL_COPIES planted (byte for byte), the rest
    distinct images; every shard written with digests, as conversion writes them."""
    train = [noise_jpeg(i, side) for i in range(n_train)]
    for i, source in TRAIN_REPEATS.items():
        if i < n_train:
            train[i] = train[source]
    _write(tmp / "train", train, shard_size, side)
    evals = []
    for e, (copies, n) in enumerate(zip(EVAL_COPIES, N_EVAL)):
        images = [train[copies[j]] if j in copies else noise_jpeg(10_000 * (e + 1) + j, side) for j in range(n)]
        _write(tmp / f"eval{e}", images, 3, side)
        evals.append(tmp / f"eval{e}")
    return ExactWorlds(tmp / "train", tuple(evals))


def same_bytes_oracle(train: Dataset, evals: list[Dataset]) -> list[list[tuple[int, int]]]:
    """Per evaluation set, every (train, eval) pair of equal image bytes, sorted: by comparing every pair."""
    from tagstream.loader.data import ShardStore

    def images(ds: Dataset) -> list[bytes]:
        store = ShardStore(ds)
        try:
            return [store.read_image(i) for i in range(ds.num_images)]
        finally:
            store.close()

    t = images(train)
    return [sorted((i, j) for j, b in enumerate(images(ds)) for i, a in enumerate(t) if a == b) for ds in evals]


def drop_digests(src: Path, dst: Path, shards: list[str] | None = None) -> Path:
    """A copy of dataset `src` as written before digests were stored: no index/NNNNN.digest.npy (of `shards`, or
    of all) and none in the manifest."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / fmt.MANIFEST).read_text())
    for entry in manifest["shards"]:
        if shards is None or entry["name"] in shards:
            fmt.index_path(dst, entry["name"], "digest").unlink()
            entry["index"].pop("digest", None)
    fmt.write_json_atomic(dst / fmt.MANIFEST, manifest)
    return dst
