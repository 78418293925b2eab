"""An index-only synthetic dataset for the sampler start-up bench: a manifest, a Zipf-tagged vocabulary and a
mask, no pixels and no shards, written in chunks through memory-mapped .npy files so 10^9 images fit a
machine with 24 GB of memory (about 17 bytes of disk per image).

Every value is a hash of (seed, image index, slot), so any chunk is generated without the others, and the
same parameters give the same dataset. `make_index_dataset` reuses a complete one it finds with the same
parameters (generation takes minutes at 10^9).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numba
import numpy as np

from tagstream.kernels.rng import counter_u64, stream_key, to_unit
from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.vocab import CLASSES, LABEL_OFFSETS, LABELS, META
from tagstream.loader.data.writer import write_manifest

CHUNK = 1 << 23  # images generated per step
PARAMS = "bench-index.json"
MASK = "dedup"
LABEL_BYTES = 4.0  # disk per label; 8 per image for the offsets, 1 for the mask


@numba.njit(cache=True)
def label_counts(key, max_labels, no_label_per_mille, start, out) -> None:
    """out[t] = number of classes of image start + t: 0 for about no_label_per_mille / 1000, else 1..max_labels."""
    for t in range(out.shape[0]):
        h = counter_u64(key, np.uint64(start + t))
        if h % np.uint64(1000) < np.uint64(no_label_per_mille):
            out[t] = 0
        else:
            out[t] = 1 + np.int64((h >> np.uint64(20)) % np.uint64(max_labels))


@numba.njit(cache=True)
def zipf_labels(key, num_classes, start, offsets, out) -> None:
    """Image start + t's classes (offsets local to the chunk): distinct, P(c) ~ 1/(c + 1.5), sorted."""
    log_c = math.log(num_classes + 1.0)
    for t in range(offsets.shape[0] - 1):
        lo, hi = offsets[t], offsets[t + 1]
        base = np.uint64(start + t) << np.uint64(8)
        attempt = 0
        for p in range(lo, hi):
            while True:
                u = to_unit(counter_u64(key, base + np.uint64(attempt)))
                attempt += 1
                c = min(np.int64(math.exp(u * log_c)) - 1, num_classes - 1)
                dup = False
                for q in range(lo, p):
                    if out[q] == c:
                        dup = True
                if not dup or attempt >= 255:
                    break
            if dup:  # 255 draws hit taken classes only (never seen): the smallest free class
                c = 0
                while True:
                    taken = False
                    for q in range(lo, p):
                        if out[q] == c:
                            taken = True
                    if not taken:
                        break
                    c += 1
            q = p  # insertion sort: a few labels per image
            while q > lo and out[q - 1] > c:
                out[q] = out[q - 1]
                q -= 1
            out[q] = c


@numba.njit(cache=True)
def _mask(key, per_million, start, out) -> None:
    for t in range(out.shape[0]):
        out[t] = counter_u64(key, np.uint64(start + t)) % np.uint64(1_000_000) < np.uint64(per_million)


def disk_bytes(images: int, max_labels: int = 3, no_label_fraction: float = 0.02) -> int:
    """Bytes the dataset takes on disk (expected; the label count is random)."""
    labels = images * (1 - no_label_fraction) * (1 + max_labels) / 2
    return int(8 * (images + 1) + LABEL_BYTES * labels + images)


def make_index_dataset(
    root: str | Path,
    *,
    images: int,
    classes: int,
    shard_size: int,
    seed: int = 0,
    mask_fraction: float = 0.01,
    max_labels: int = 3,
    no_label_fraction: float = 0.02,
) -> Dataset:
    """Write (or reuse) the dataset under root: vocab "v", mask "dedup" (mask_fraction of the images)."""
    if classes < max_labels or images < 1 or shard_size < 1:
        raise ValueError(
            f"need images >= 1, shard_size >= 1 and classes >= max_labels={max_labels}; got {images}, {shard_size}, {classes}"
        )
    root = Path(root)
    params = {
        "images": images,
        "classes": classes,
        "shard_size": shard_size,
        "seed": seed,
        "mask_fraction": mask_fraction,
        "max_labels": max_labels,
        "no_label_fraction": no_label_fraction,
    }
    try:
        if json.loads((root / PARAMS).read_text()) == params:
            return Dataset(root)
    except (OSError, ValueError, fmt.FormatError):
        pass
    need, free = (
        disk_bytes(images, max_labels, no_label_fraction),
        shutil.disk_usage(root.parent if not root.exists() else root).free,
    )
    if need > 0.95 * free:
        raise ValueError(
            f"{images:,} images need about {need / 2**30:.1f} GiB of disk; {free / 2**30:.1f} GiB are free under {root}"
        )
    if root.exists():
        shutil.rmtree(root)
    vocab = root / fmt.VOCAB_DIR / "v"
    vocab.mkdir(parents=True)
    counts = np.zeros(classes, np.int64)
    offsets = np.lib.format.open_memmap(vocab / LABEL_OFFSETS, mode="w+", dtype="<i8", shape=(images + 1,))
    offsets[0] = 0
    k = np.empty(CHUNK, np.int64)
    for lo in range(0, images, CHUNK):
        n = min(CHUNK, images - lo)
        label_counts(stream_key(seed, 1), max_labels, int(round(no_label_fraction * 1000)), lo, k[:n])
        offsets[lo + 1 : lo + n + 1] = offsets[lo] + np.cumsum(k[:n])
    nnz = int(offsets[-1])
    labels = np.lib.format.open_memmap(vocab / LABELS, mode="w+", dtype="<i4", shape=(nnz,))
    for lo in range(0, images, CHUNK):
        n = min(CHUNK, images - lo)
        off = np.asarray(offsets[lo : lo + n + 1]) - offsets[lo]
        part = np.empty(int(off[-1]), np.int32)
        zipf_labels(stream_key(seed, 2), classes, lo, off, part)
        labels[offsets[lo] : offsets[lo + n]] = part
        counts += np.bincount(part, minlength=classes)
    del offsets, labels  # flushed and unmapped
    fmt.mask_path(root, MASK).parent.mkdir(parents=True, exist_ok=True)
    mask = np.lib.format.open_memmap(fmt.mask_path(root, MASK), mode="w+", dtype=np.bool_, shape=(images,))
    for lo in range(0, images, CHUNK):
        _mask(stream_key(seed, 3), int(round(mask_fraction * 1e6)), lo, mask[lo : lo + CHUNK])
    del mask
    with open(vocab / CLASSES, "w", encoding="utf-8") as f:
        f.write("id\tname\tcount\tmembers\n")
        f.writelines(f"{c}\tclass{c}\t{int(counts[c])}\ttag{c}\n" for c in range(classes))
    fmt.write_json_atomic(
        vocab / META, {"name": "v", "classes": classes, "images": images, "options": {"synthetic": params}}
    )
    sizes = [min(shard_size, images - lo) for lo in range(0, images, shard_size)]
    shards = [{"name": fmt.shard_name(s), "images": n, "bytes": 0, "sha256": ""} for s, n in enumerate(sizes)]
    write_manifest(
        root, shards, tags=classes, source={"kind": "index-only synthetic (tagstream bench sampler)", **params}
    )
    fmt.write_json_atomic(root / PARAMS, params)
    return Dataset(root)
