"""Index-only datasets for the sampler tests: a manifest, a vocabulary and masks, no shards or pixels.

Image i's classes are derived from i (`image_classes`), so a test can recompute anything by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.vocab import VocabClass, write_vocab

# uneven shards: an empty one, a tiny one, large ones (forces tail cuts at most world sizes)
SHARD_SIZES = (500, 0, 1200, 37, 800, 463)
NUM_CLASSES = 10


def image_classes(i: int, num_classes: int = NUM_CLASSES) -> list[int]:
    """None for i % 13 == 0; else 1-3 distinct classes skewed towards low ids."""
    if i % 13 == 0:
        return []
    first = (i * 7) % num_classes if i % 3 else (i // 3) % 3
    return sorted(
        {first, (first + i % 2) % num_classes, 0 if i % 5 == 0 else first, (i * i) % 4 if i % 11 == 2 else first}
    )


def mask_values(name: str, n: int) -> np.ndarray:
    """The masks every index-only dataset carries: "dedup" (i % 10 == 1) and "other" (i % 7 == 3)."""
    i = np.arange(n)
    return {"dedup": i % 10 == 1, "other": i % 7 == 3}[name]


def zipf_class(i: int, num_classes: int = NUM_CLASSES) -> list[int]:
    """One class per image, Zipf-like (class c about twice as frequent as c + 1), derived from i by a hash."""
    h = (i * 2654435761) % 2**32
    return [min(num_classes - 1, 32 - h.bit_length())]


def write_index_only(
    root: Path,
    shard_sizes=SHARD_SIZES,
    num_classes: int = NUM_CLASSES,
    vocab: str = "v",
    classes_of: Callable[[int, int], list[int]] = image_classes,
) -> Dataset:
    """Write manifest.json, vocab/<vocab>/ and masks/{dedup,other}.npy under root; returns the Dataset.
    Image i carries classes_of(i, num_classes)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = int(sum(shard_sizes))
    shards = [{"name": fmt.shard_name(k), "images": int(s)} for k, s in enumerate(shard_sizes)]
    fmt.write_json_atomic(
        root / fmt.MANIFEST, {"format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION, "images": n, "shards": shards}
    )
    ds = Dataset(root)
    rows = [classes_of(i, num_classes) for i in range(n)]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    labels = np.array([c for r in rows for c in r], np.int32)
    counts = np.bincount(labels, minlength=num_classes)
    classes = [VocabClass(c, f"class{c}", int(counts[c]), (f"tag{c}",)) for c in range(num_classes)]
    write_vocab(ds, vocab, classes, offsets, labels, options={}, report={})
    (root / fmt.MASKS_DIR).mkdir(exist_ok=True)
    for name in ("dedup", "other"):
        np.save(root / fmt.MASKS_DIR / f"{name}.npy", mask_values(name, n))
    return ds
