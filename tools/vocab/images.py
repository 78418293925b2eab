"""The vocabulary of a label-free stage (`model.objective = "mae"`): one class, "image", that every image carries.

The loader draws through a vocabulary; with this one, natural sampling draws every image (not masked out, not held
out) with equal weight, so a dataset converted without hashtags trains its MAE stage like any other. It is built
next to the dataset's other vocabularies from the image count alone (no shard is read).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tagstream.loader.data import Dataset, VocabClass, write_vocab

IMAGES_VOCAB = "images"


def build_images_vocab(root: str | Path, name: str = IMAGES_VOCAB) -> Path:
    """Write vocab/NAME/ with the single class "image" on every image; returns its folder."""
    ds = Dataset(root)
    n = ds.num_images
    report = {"images": n, "classes": 1, "rule": "one class that every image carries (a label-free stage)"}
    return write_vocab(
        ds,
        name,
        [VocabClass(0, "image", n, ())],
        np.arange(n + 1, dtype=np.int64),
        np.zeros(n, np.int32),
        {"images": True},
        report,
    )


def ensure_images_vocab(
    root: str | Path, name: str = IMAGES_VOCAB, *, build: bool = True, wait_s: float = 300.0
) -> str | None:
    """Build the one-class vocabulary unless the dataset has it; returns a line saying so when it built one.
    build=False (a torchrun rank other than 0): wait up to wait_s for rank 0 to have built it."""
    from tagstream.loader.data import local_path

    if local_path(str(root)) is None:
        raise ValueError(
            f"{root}: a label-free run on a dataset URL needs its vocabulary {name!r}; give --vocab, or build it on "
            "a local copy (tagstream train --config ... --dataset LOCAL) and push that"
        )
    ds = Dataset(root)
    deadline = time.monotonic() + wait_s
    while not build and name not in ds.vocab_names():
        if time.monotonic() > deadline:
            raise ValueError(f"{root}: rank 0 did not build the vocabulary {name!r} within {wait_s:.0f} s")
        time.sleep(0.5)
    if name in ds.vocab_names():
        return None
    build_images_vocab(root, name)
    return f"built the one-class vocabulary {name!r} on {root} ({ds.num_images} images): every image drawn alike"
