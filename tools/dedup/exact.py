"""The same-bytes check of de-duplication: every training image whose stored bytes equal an evaluation image's.

Both sides' 64-bit digests come from their index (index/NNNNN.digest.npy, written at conversion), so the check
reads only the few images whose digests match, never the datasets; a shard converted before the digests existed
has its images read and hashed here (the full read the check used to be). A digest match is only a candidate:
the training image is read and hashed again, each evaluation image it may pair with is read and hashed once, and
the pair is made by comparing their bytes. So a 64-bit collision or a forged digest array can cost reads (at
most one of every image) but never yields a false pair; a wrong stored digest can hide a copy (counted in
ExactCheck.wrong_digests; `tagstream verify` names it).
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

_UNCHECKED, _SOUND, _WRONG = 0, 1, 2  # an evaluation digest: from the index, not yet read / its bytes give it / not


@dataclass(frozen=True)
class ExactCheck:
    """Per evaluation set (train indices, eval indices) of the same-bytes pairs, sorted; how the training
    digests were had (STORED, READ, or a mix naming the shards read); how many training images were read to
    confirm a digest match; how many stored digests (of those, and of the evaluation images read) their
    bytes do not give (a damaged or edited index: copies behind a wrong digest are missed)."""

    pairs: list[tuple[NDArray[np.int64], NDArray[np.int64]]]
    how: str
    candidates: int
    wrong_digests: int


def _shard_digests(ds: Dataset, store: ShardStore, k: int) -> tuple[NDArray[np.uint64], bool]:
    """(shard k's digests, whether they were stored): the index's (memory-mapped), else read and hashed here."""
    if ds.has_index_array(k, "digest"):
        return ds.index_array(k, "digest"), True
    lo, hi = int(ds.shard_starts[k]), int(ds.shard_starts[k + 1])
    return np.fromiter((fmt.image_digest(store.read_image(i)) for i in range(lo, hi)), np.uint64, hi - lo), False


class _EvalTable:
    """Every evaluation image's digest (sorted, 25 bytes an image), where it comes from, and whether its bytes
    were found to give it."""

    def __init__(self, evals: Sequence[Dataset]):
        keys, sets, index, state = [], [], [], []
        self.stores = [ShardStore(ds) for ds in evals]
        for e, (ds, store) in enumerate(zip(evals, self.stores)):
            for k in range(len(ds.shards)):
                digests, stored = _shard_digests(ds, store, k)
                keys.append(np.asarray(digests, np.uint64))
                state.append(np.full(len(digests), _UNCHECKED if stored else _SOUND, np.int8))
            sets.append(np.full(ds.num_images, e, np.int64))
            index.append(np.arange(ds.num_images, dtype=np.int64))
        keys_all = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
        order = np.argsort(keys_all, kind="stable")
        self.keys = keys_all[order]
        self.sets, self.index = np.concatenate(sets)[order], np.concatenate(index)[order]
        self.state = np.concatenate(state)[order] if state else np.zeros(0, np.int8)
        self.wrong = 0

    def matches(self, s: int, image: bytes, digest: int) -> bool:
        """Whether entry s's image has exactly these bytes (whose digest is `digest`); its own stored digest is
        checked against its bytes the first time it is read, and an entry found wrong is never read again."""
        e, j = int(self.sets[s]), int(self.index[s])
        if self.state[s] == _WRONG:
            return False
        theirs = self.stores[e].read_image(j)
        if self.state[s] == _UNCHECKED:
            sound = fmt.image_digest(theirs) == digest
            self.state[s] = _SOUND if sound else _WRONG
            self.wrong += not sound
        return self.state[s] == _SOUND and theirs == image  # the bytes, not the digests, make the pair

    def close(self) -> None:
        for store in self.stores:
            store.close()


def exact_pairs(train: Dataset, evals: Sequence[Dataset]) -> ExactCheck:
    """Every (train, eval) pair of identical image bytes, per evaluation set, with how it was found (ExactCheck).

    Memory: the evaluation digests, one training shard's digests at a time (memory-mapped when stored), and the
    pairs as flat int64 buffers."""
    found = [(array("q"), array("q")) for _ in evals]
    table = _EvalTable(evals)
    store = ShardStore(train)
    read_shards = candidates = wrong = 0
    try:
        for k in range(len(train.shards)):
            lo = int(train.shard_starts[k])
            digests, stored = _shard_digests(train, store, k)
            read_shards += not stored
            first = np.searchsorted(table.keys, digests, side="left")
            last = np.searchsorted(table.keys, digests, side="right")
            for local in np.flatnonzero(last > first).tolist():
                candidates += 1
                image, digest = store.read_image(lo + local), int(digests[local])
                if fmt.image_digest(image) != digest:
                    wrong += 1
                    continue
                for s in range(int(first[local]), int(last[local])):
                    if table.matches(s, image, digest):
                        found[int(table.sets[s])][0].append(lo + local)
                        found[int(table.sets[s])][1].append(int(table.index[s]))
    finally:
        store.close()
        table.close()
    shards = len(train.shards)
    how = (
        STORED
        if read_shards == 0
        else READ
        if read_shards == shards
        else f"{STORED}, {read_shards} of {shards} shards read"
    )
    return ExactCheck(_sorted_pairs(found), how, candidates, wrong + table.wrong)


def _sorted_pairs(found: list[tuple[array, array]]) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    out = []
    for t, j in found:
        t, j = np.frombuffer(t, np.int64), np.frombuffer(j, np.int64)
        order = np.lexsort((j, t))
        out.append((t[order], j[order]))
    return out
