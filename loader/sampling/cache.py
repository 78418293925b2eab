"""The sampling cache beside a vocabulary: summaries (loader/sampling/summary.py) and packings, keyed by their inputs.

    vocab/NAME/sampling/KEY/summary.json            what and inputs it was made of; written last
                            counts.npy shard_sums.npy shard_drawable.npy
                            packing-P.json           P partitions: imbalances; written last
                            packing-P.block_starts.npy packing-P.owner.npy packing-P.block_weights.npy
                            packing-P-one-pass.*     the same evened to whole images (kernels/balance.py)
    vocab/NAME/sampling/KEY.lock                     flock: one process computes, the others wait and read

KEY is a digest of the settings (sampling, combine, masks, holdout split) and the inputs: the content of
manifest.json, vocab.json and classes.tsv, and (size, mtime, ctime, inode) of label_offsets.npy, labels.npy
and each mask. Trade-off: hashing the large arrays' contents would cost every rank O(N) at start-up, the
very thing the cache removes; tagstream's writers replace files (new inode, new times), so a changed
vocabulary or mask gets a new key and a stale entry is never read. Every file is written atomically
(loader/data/format.py); a read-only dataset directory means no cache, not an error.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tagstream.kernels.assign import Packing
from tagstream.loader.data import format as fmt
from tagstream.loader.data.vocab import CLASSES, LABEL_OFFSETS, LABELS, META
from tagstream.loader.sampling.summary import SamplingSummary

CACHE_DIR = "sampling"
CACHE_VERSION = 1
SUMMARY = "summary.json"
_SUMMARY_ARRAYS = ("counts", "shard_sums", "shard_drawable")
_PACKING_ARRAYS = ("block_starts", "owner", "block_weights")


def _packing_name(partitions: int, one_pass: bool) -> str:
    """The packing onto P partitions, or (one_pass) the same evened to whole images."""
    return f"packing-{partitions}-one-pass" if one_pass else f"packing-{partitions}"


def _content(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _identity(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def cache_inputs(dataset: Any, vocab: Any, masks: list[str]) -> dict:
    """What the cached facts are computed from (see the module docstring)."""
    return {
        "manifest": _content(Path(dataset.root) / fmt.MANIFEST),
        "vocab": {name: _content(vocab.dir / name) for name in (META, CLASSES)},
        "labels": {name: _identity(vocab.dir / name) for name in (LABEL_OFFSETS, LABELS)},
        "masks": {name: _identity(fmt.mask_path(dataset.root, name)) for name in masks},
    }


class SamplingCache:
    """One cache entry: the summary of one (vocabulary, sampling rule) and its packings, one per partition count."""

    def __init__(self, dataset: Any, vocab: Any, what: dict):
        inputs = cache_inputs(dataset, vocab, list(what.get("masks", ())))
        self.record = {"version": CACHE_VERSION, "what": what, "inputs": inputs}
        self.key = hashlib.sha256(json.dumps(self.record, sort_keys=True).encode()).hexdigest()[:24]
        self.dir = vocab.dir / CACHE_DIR / self.key
        self.writable = True

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the entry's lock (processes on other machines too, where the file system supports flock)."""
        try:
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.dir.parent / f"{self.key}.lock", "a")
        except OSError as exc:
            self._unwritable(exc)
            yield
            return
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def load_summary(self) -> SamplingSummary | None:
        meta = self._read_json(SUMMARY)
        if meta is None or meta.get("record") != self.record:
            return None
        arrays = self._read_arrays("", _SUMMARY_ARRAYS)
        return None if arrays is None else SamplingSummary(*arrays)

    def save_summary(self, summary: SamplingSummary) -> None:
        self._write("", {n: getattr(summary, n) for n in _SUMMARY_ARRAYS}, SUMMARY, {"record": self.record})

    def load_packing(self, partitions: int, *, one_pass: bool = False) -> Packing | None:
        name = _packing_name(partitions, one_pass)
        meta = self._read_json(f"{name}.json")
        if meta is None or meta.get("summary") != self.key:
            return None
        arrays = self._read_arrays(f"{name}.", _PACKING_ARRAYS)
        if arrays is None:
            return None
        starts, owner, weights = arrays
        return Packing(starts, owner, float(meta["imbalance"]), float(meta["imbalance_whole_shards"]), weights)

    def save_packing(self, partitions: int, packing: Packing, *, one_pass: bool = False) -> None:
        meta = {
            "summary": self.key,
            "imbalance": packing.imbalance,
            "imbalance_whole_shards": packing.imbalance_whole_shards,
        }
        name = _packing_name(partitions, one_pass)
        self._write(f"{name}.", {n: getattr(packing, n) for n in _PACKING_ARRAYS}, f"{name}.json", meta)

    # -- files -------------------------------------------------------------------------------------
    def _read_json(self, name: str) -> dict | None:
        try:
            meta = json.loads((self.dir / name).read_text())
        except (OSError, ValueError, RecursionError):
            return None
        return meta if isinstance(meta, dict) else None  # a damaged entry is recomputed, never trusted

    def _read_arrays(self, prefix: str, names: tuple[str, ...]) -> list[np.ndarray] | None:
        try:
            return [np.load(self.dir / f"{prefix}{n}.npy", allow_pickle=False) for n in names]
        except Exception:  # noqa: BLE001 - numpy's header parser raises SyntaxError, TokenError... too
            return None  # a damaged entry is recomputed, never trusted

    def _write(self, prefix: str, arrays: dict[str, np.ndarray], meta_name: str, meta: dict) -> None:
        """Arrays first, the JSON that vouches for them last (each atomically)."""
        if not self.writable:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for name, array in arrays.items():
                fmt.save_npy_atomic(self.dir / f"{prefix}{name}.npy", np.ascontiguousarray(array))
            fmt.write_json_atomic(self.dir / meta_name, meta)
        except OSError as exc:
            self._unwritable(exc)

    def _unwritable(self, exc: OSError) -> None:
        if self.writable:
            warnings.warn(f"sampling cache not written ({exc}); every start computes the summary again", stacklevel=3)
        self.writable = False
