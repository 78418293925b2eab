"""The hash side of de-duplication: the same-bytes check (a BLAKE2b digest of every stored image), the
content boxes of the index, and the evaluation side's pHashes (flipped left-right for `mirrors`, or found
by decoding when the index has no content boxes); the pHash join itself is kernels.dedup.

The exact-bytes check reads every record once (O(data), a one-off): stored images carry no content hash,
and pHash distance 0 does not mean same bytes. Mirror hashes decode each evaluation image once: cheap for
evaluation-sized sets.
"""

from __future__ import annotations

import hashlib
from array import array
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
    """Per evaluation dataset, (train index, eval index) of every pair with identical image bytes, sorted.

    Evaluation digests are held in a dict (evaluation sets are small); the training set is streamed, its
    matches appended to flat int64 buffers (8 bytes an index, no object per pair)."""
    table: dict[bytes, list[tuple[int, int]]] = {}
    for e, ds in enumerate(evals):
        for j, dig in iter_digests(ds):
            table.setdefault(dig, []).append((e, j))
    found = [(array("q"), array("q")) for _ in evals]
    for i, dig in iter_digests(train):
        for e, j in table.get(dig, ()):
            found[e][0].append(i)
            found[e][1].append(j)
    out = []
    for t, j in found:
        t, j = np.frombuffer(t, np.int64), np.frombuffer(j, np.int64)
        order = np.lexsort((j, t))
        out.append((t[order], j[order]))
    return out


def has_content_boxes(ds: Dataset) -> bool:
    """Whether every shard's index holds content boxes (a dataset converted before they were stored has
    none: its pHashes are of the whole frame)."""
    return all(ds.has_index_array(k, "content_box") for k in range(len(ds.shards)))


def content_boxes(ds: Dataset) -> NDArray[np.int64] | None:
    """(N, 4) content boxes (left, top, right, bottom) from the index, or None without them (O(N): for
    evaluation sets; Dataset.content_boxes for a few images of a large set)."""
    return fmt.unpack_boxes(ds.global_array("content_box")) if has_content_boxes(ds) else None


def bordered(ds: Dataset) -> int | None:
    """How many images have a content box smaller than their frame (None without boxes); streams the shards."""
    if not has_content_boxes(ds):
        return None
    total = 0
    for k in range(len(ds.shards)):
        b = fmt.unpack_boxes(ds.index_array(k, "content_box"))
        w, h = ds.index_array(k, "width"), ds.index_array(k, "height")
        total += int(((b[:, 0] > 0) | (b[:, 1] > 0) | (b[:, 2] < w) | (b[:, 3] < h)).sum())
    return total


def decoded_hashes(
    ds: Dataset, *, mirrored: bool
) -> tuple[NDArray[np.uint64], NDArray[np.uint64] | None, NDArray[np.int64]]:
    """(pHash inside each image's content box, the same of the content flipped left-right or None, the
    boxes (N, 4)), decoding
    every image once: the stored box where the index has one, else found here (tools.dedup.borders). For
    evaluation sets, which are small."""
    from PIL import Image

    from tagstream.loader.data import ShardStore
    from tagstream.tools.dedup.imagehash import content_phash, phash_image

    stored = content_boxes(ds)
    boxes = np.zeros((ds.num_images, 4), np.int64)
    direct = np.zeros(ds.num_images, np.uint64)
    flipped = np.zeros(ds.num_images, np.uint64) if mirrored else None
    store = ShardStore(ds)
    try:
        for i in range(ds.num_images):
            try:
                with fmt.open_image(store.read_image(i)) as img:  # an image-bomb header: refused before decoding
                    rgb = img.convert("RGB")
            except (OSError, ValueError) as exc:  # a converted dataset should have none
                raise fmt.FormatError(f"{ds.root}: {store.where(i)} does not decode: {exc}") from None
            box, direct[i] = content_phash(rgb, tuple(stored[i].tolist()) if stored is not None else None)
            boxes[i] = box
            if flipped is not None:
                flipped[i] = phash_image(rgb.crop(box).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    finally:
        store.close()
    return direct, flipped, boxes


def mirror_hashes(ds: Dataset) -> NDArray[np.uint64]:
    """pHash of every image's content flipped left-right (decodes each image: meant for evaluation sets)."""
    return decoded_hashes(ds, mirrored=True)[1]


def eval_hashes(ds: Dataset, *, mirrors: bool) -> tuple[NDArray[np.uint64], NDArray[np.uint64] | None, NDArray, str]:
    """(pHashes, mirrored pHashes or None, content boxes (N, 4), "stored" or "detected") of an evaluation
    set, inside the content boxes: the index's when it has them, else found here by decoding every image
    once (an evaluation set converted before the boxes were stored still gets its borders cut)."""
    boxes = content_boxes(ds)
    if boxes is None:
        return (*decoded_hashes(ds, mirrored=mirrors), "detected")
    flipped = decoded_hashes(ds, mirrored=True)[1] if mirrors else None
    return np.ascontiguousarray(ds.global_array("phash")), flipped, boxes, "stored"
