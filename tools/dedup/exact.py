"""The same-bytes check of de-duplication: every training image whose stored bytes equal an evaluation image's.

A training set's 64-bit digests come from its index (index/NNNNN.digest.npy, written at conversion), so the
check reads only the few images whose digest matches an evaluation image's, never the dataset; a shard converted
before the digests existed has its images read and hashed here (the full read the check used to be). A digest
match is only a candidate: its bytes are read, hashed again and compared with the evaluation image's, so a
64-bit collision or a forged digest array can cost reads but never yields a false pair. Evaluation sets are
small: their digests are always made from their bytes.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data import Dataset, ShardStore
from tagstream.loader.data import format as fmt

STORED = "stored digests"  # every training shard's digests came from its index
READ = "read every image"  # none had them (converted before they were stored): every image read and hashed


@dataclass(frozen=True)
class ExactCheck:
    """Per evaluation set (train indices, eval indices) of the same-bytes pairs, sorted; how the training
    digests were had (STORED, READ, or a mix naming the shards read); how many training images were read to
    confirm a digest match; how many of those had a stored digest their bytes do not give (a damaged or
    edited index: `tagstream verify` names it, and copies behind a wrong digest are missed)."""

    pairs: list[tuple[NDArray[np.int64], NDArray[np.int64]]]
    how: str
    candidates: int
    wrong_digests: int


def has_digests(ds: Dataset) -> bool:
    """Whether every shard's index holds image digests (a dataset converted before them has none)."""
    return all(ds.has_index_array(k, "digest") for k in range(len(ds.shards)))


def _read_digests(store: ShardStore, lo: int, hi: int) -> NDArray[np.uint64]:
    return np.fromiter((fmt.image_digest(store.read_image(i)) for i in range(lo, hi)), np.uint64, hi - lo)


def _eval_table(evals: Sequence[Dataset]) -> tuple[NDArray[np.uint64], NDArray[np.int64], NDArray[np.int64]]:
    """(digests, eval set, eval index) of every evaluation image, sorted by digest; made from the bytes."""
    keys, sets, index = [], [], []
    for e, ds in enumerate(evals):
        store = ShardStore(ds)
        try:
            keys.append(_read_digests(store, 0, ds.num_images))
        finally:
            store.close()
        sets.append(np.full(ds.num_images, e, np.int64))
        index.append(np.arange(ds.num_images, dtype=np.int64))
    keys_all = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
    order = np.argsort(keys_all, kind="stable")
    return keys_all[order], np.concatenate(sets)[order], np.concatenate(index)[order]


def exact_pairs(train: Dataset, evals: Sequence[Dataset]) -> ExactCheck:
    """Every (train, eval) pair of identical image bytes, per evaluation set, with how it was found (ExactCheck).

    Memory: the evaluation digests (24 bytes an image), one shard's digests at a time (memory-mapped when
    stored), and the pairs as flat int64 buffers."""
    keys, sets, index = _eval_table(evals)
    found = [(array("q"), array("q")) for _ in evals]
    eval_stores = [ShardStore(ds) for ds in evals]
    store = ShardStore(train)
    read_shards = candidates = wrong = 0
    try:
        for k in range(len(train.shards)):
            lo, hi = int(train.shard_starts[k]), int(train.shard_starts[k + 1])
            if train.has_index_array(k, "digest"):
                digests = train.index_array(k, "digest")
            else:
                digests, read_shards = _read_digests(store, lo, hi), read_shards + 1
            first = np.searchsorted(keys, digests, side="left")
            last = np.searchsorted(keys, digests, side="right")
            for local in np.flatnonzero(last > first).tolist():
                candidates += 1
                image = store.read_image(lo + local)
                if fmt.image_digest(image) != int(digests[local]):
                    wrong += 1
                    continue
                for s in range(int(first[local]), int(last[local])):
                    e, j = int(sets[s]), int(index[s])
                    if eval_stores[e].read_image(j) == image:  # the bytes, not the digest, make the pair
                        found[e][0].append(lo + local)
                        found[e][1].append(j)
    finally:
        store.close()
        for s in eval_stores:
            s.close()
    shards = len(train.shards)
    how = (
        STORED
        if read_shards == 0
        else READ
        if read_shards == shards
        else f"{STORED}, {read_shards} of {shards} shards read"
    )
    return ExactCheck(_sorted_pairs(found), how, candidates, wrong)


def _sorted_pairs(found: list[tuple[array, array]]) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    out = []
    for t, j in found:
        t, j = np.frombuffer(t, np.int64), np.frombuffer(j, np.int64)
        order = np.lexsort((j, t))
        out.append((t[order], j[order]))
    return out
