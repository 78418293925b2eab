"""The hash side of de-duplication: the same-bytes check (a BLAKE2b digest of every stored image) and the
pHash of each evaluation image flipped left-right (for `mirrors`); the pHash join itself is kernels.dedup.

The exact-bytes check reads every record once (O(data), a one-off): stored images carry no content hash,
and pHash distance 0 does not mean same bytes. Mirror hashes decode each evaluation image once: cheap for
evaluation-sized sets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data import Dataset
from tagstream.loader.data import format as fmt

# chosen from `tagstream bench dedup` (1,000 photo-like images): the smallest D with recall >= 0.95 on
# every main edit (crops of up to 5% need it) and no false match among 499,500 distinct pairs
DEFAULT_MAX_DISTANCE = 10


def _digest(image: bytes) -> bytes:
    return hashlib.blake2b(image, digest_size=16).digest()


def iter_digests(ds: Dataset):
    """(global index, 16-byte BLAKE2b digest of the stored image bytes) for every image, in index order.

    Reads through ShardStore, so the LMDB environments are the process's shared read-only ones."""
    from tagstream.loader.data import ShardStore

    store = ShardStore(ds)
    try:
        for i in range(ds.num_images):
            yield i, _digest(store.read_image(i))
    finally:
        store.close()


def exact_pairs(train: Dataset, evals: Sequence[Dataset]) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """Per evaluation dataset, (train index, eval index) of every pair with identical image bytes.

    Evaluation digests are held in a dict (evaluation sets are small); the training set is streamed."""
    table: dict[bytes, list[tuple[int, int]]] = {}
    for e, ds in enumerate(evals):
        for j, dig in iter_digests(ds):
            table.setdefault(dig, []).append((e, j))
    found: list[list[tuple[int, int]]] = [[] for _ in evals]
    for i, dig in iter_digests(train):
        for e, j in table.get(dig, ()):
            found[e].append((i, j))
    out = []
    for rows in found:
        a = np.array(sorted(rows), np.int64).reshape(-1, 2)
        out.append((a[:, 0].copy(), a[:, 1].copy()))
    return out


def mirror_hashes(ds: Dataset) -> NDArray[np.uint64]:
    """pHash of every image flipped left-right (decodes each image: meant for evaluation sets, which are small)."""
    from PIL import Image

    from tagstream.loader.data import ShardStore
    from tagstream.tools.dedup.imagehash import phash_image

    store = ShardStore(ds)
    out = np.zeros(ds.num_images, np.uint64)
    try:
        for i in range(ds.num_images):
            try:
                with fmt.open_image(store.read_image(i)) as img:  # an image-bomb header: refused before decoding
                    out[i] = phash_image(img.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT))
            except (OSError, ValueError) as exc:  # a converted dataset should have none
                raise fmt.FormatError(f"{ds.root}: {store.where(i)} does not decode: {exc}") from None
    finally:
        store.close()
    return out
