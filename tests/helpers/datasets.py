"""Tiny datasets for the loader tests: each image's flat colour and tags are derived from its index."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tagstream.loader.data.dataset import Dataset
from tagstream.tools.bench.loader_data import encode_jpeg, index_color, index_tags, write_dataset, write_identity_vocab

NUM_TAGS = 12


def image_size(index: int) -> tuple[int, int]:
    """(width, height) of image `index`: varied aspect ratios, 32 to 64 px a side."""
    return 32 + (index * 5) % 33, 32 + (index * 11) % 33


def index_records(n: int, num_tags: int = NUM_TAGS):
    for i in range(n):
        w, h = image_size(i)
        px = np.empty((h, w, 3), np.uint8)
        px[:] = index_color(i)
        yield encode_jpeg(px, quality=95), index_tags(i, num_tags), w, h


def make_index_dataset(root: Path, n: int = 48, shard_size: int = 16, num_tags: int = NUM_TAGS) -> Dataset:
    """A dataset of n flat-colour JPEGs (colour = index_color(i)) with an identity vocabulary "v"."""
    ds = write_dataset(root, index_records(n, num_tags), num_images=n, shard_size=shard_size, num_tags=num_tags)
    write_identity_vocab(ds, "v")
    return ds
