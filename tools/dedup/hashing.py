"""The hash side of de-duplication: the content boxes of the index, and the evaluation side's pHashes (flipped
left-right for `mirrors`, or found by decoding when the index has no content boxes); the pHash join itself is
kernels.dedup, the same-bytes check tools/dedup/exact.py (pHash distance 0 does not mean same bytes).

Mirror hashes decode each evaluation image once: cheap for evaluation-sized sets.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data import Dataset
from tagstream.loader.data import format as fmt

# chosen from `tagstream bench dedup` (1,000 photo-like images): the smallest D with recall >= 0.95 on
# every main edit (crops of up to 5% need it) and no false match among 499,500 distinct pairs
DEFAULT_MAX_DISTANCE = 10


def content_boxes(ds: Dataset) -> NDArray[np.int64] | None:
    """(N, 4) content boxes (left, top, right, bottom) from the index, or None without them (O(N): for
    evaluation sets; Dataset.content_boxes for a few images of a large set)."""
    return fmt.unpack_boxes(ds.global_array("content_box")) if ds.every_shard_has("content_box") else None


def bordered(ds: Dataset) -> int | None:
    """How many images have a content box smaller than their frame (None without boxes); streams the shards."""
    if not ds.every_shard_has("content_box"):
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
