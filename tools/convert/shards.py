"""Write one shard: LMDB records streamed into a temporary environment, the per-shard index, then the rename.

Commit protocol (crash-safe against kill -9 at any instant): records go to shards/NNNNN.lmdb.tmp in one
write transaction; on commit the index arrays are written atomically, the directory is renamed to its
final name, and last the shard's state file .convert/NNNNN.json records it as done. A rerun trusts only
shards that have a state file and discards everything else.

Determinism: keys are appended in order in a single transaction into a fresh environment with a fixed
map size and zero-initialised pages, so the same records give a byte-identical data.mdb (on machines with
the same page size); the manifest's sha256 is that of data.mdb.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
from tagstream.loader import format as fmt
from tagstream.tools.convert.image import Accepted

MAP_SIZE = 1 << 40  # address space only: without writemap the file grows as pages are written
STATE_DIR = ".convert"
TMP_SUFFIX = ".tmp"


def state_path(root: Path, shard: int) -> Path:
    return Path(root) / STATE_DIR / f"{fmt.shard_name(shard)}.json"


def open_env(path: Path, *, write: bool = False):
    """An LMDB environment of a shard, as conversion writes it (write) or as tools read it."""
    import lmdb

    if write:
        return lmdb.open(str(path), map_size=MAP_SIZE, subdir=True, lock=False, meminit=True, readahead=False)
    return lmdb.open(str(path), subdir=True, readonly=True, lock=False, readahead=False)


class ShardWriter:
    """Accumulates one shard's records, rejects and new tags; `commit` makes it durable under its final name."""

    def __init__(self, root: Path, shard: int, input_start: int):
        self.root = Path(root)
        self.shard = shard
        self.name = fmt.shard_name(shard)
        self.input_start = input_start
        self.final = fmt.shard_path(self.root, self.name)
        self.tmp = self.final.with_name(self.final.name + TMP_SUFFIX)
        self.offsets: list[int] = [0]
        self.tag_ids: list[int] = []
        self.width: list[int] = []
        self.height: list[int] = []
        self.phash: list[int] = []
        self.rejects: list[dict] = []
        self.new_tags: list[str] = []
        self.reencoded: Counter[str] = Counter()
        self._env = None
        self._txn = None

    def __len__(self) -> int:
        return len(self.width)

    def add(self, image: Accepted, tag_ids: list[int], source: str) -> None:
        if self._env is None:
            if self.tmp.exists():
                shutil.rmtree(self.tmp)
            self._env = open_env(self.tmp, write=True)
            self._txn = self._env.begin(write=True)
        ids = sorted(set(tag_ids))
        self._txn.put(fmt.encode_key(len(self)), fmt.pack_record(image.data, ids, source), append=True)
        self.tag_ids.extend(ids)
        self.offsets.append(len(self.tag_ids))
        self.width.append(image.width)
        self.height.append(image.height)
        self.phash.append(image.phash)
        self.reencoded.update(image.reencoded)
        if image.reencoded:
            self.reencoded["images"] += 1

    def abort(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._env.close()
            self._env = self._txn = None
        if self.tmp.exists():
            shutil.rmtree(self.tmp)

    def commit(self, input_stop: int) -> dict:
        """Make the shard durable; returns its state (also written to .convert/NNNNN.json, the commit point)."""
        if self._txn is None:
            raise ValueError("cannot commit an empty shard")
        self._txn.commit()
        self._env.sync(True)
        self._env.close()
        self._env = self._txn = None
        data = self.tmp / "data.mdb"
        entry = {"name": self.name, "images": len(self), "bytes": data.stat().st_size, "sha256": fmt.file_sha256(data)}
        arrays = {
            "tag_offsets": self.offsets,
            "tag_ids": self.tag_ids,
            "width": self.width,
            "height": self.height,
            "phash": self.phash,
        }
        for name, values in arrays.items():
            fmt.save_npy_atomic(fmt.index_path(self.root, self.name, name), np.array(values, dtype=fmt.INDEX_ARRAYS[name]))
        if self.final.exists():  # left by a run killed between the rename and its state file
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
        fmt.fsync_dir(self.final.parent)
        state = {
            **entry,
            "input_start": self.input_start,
            "input_stop": input_stop,
            "new_tags": self.new_tags,
            "rejects": self.rejects,
            "reencoded": dict(sorted(self.reencoded.items())),
        }
        fmt.write_json_atomic(state_path(self.root, self.shard), state)
        return state


def shard_intact(root: Path, state: dict) -> bool:
    """Cheap resume check of a committed shard: its data file has the recorded size and its index exists."""
    data = fmt.shard_path(root, state["name"]) / "data.mdb"
    if not data.exists() or data.stat().st_size != state["bytes"]:
        return False
    return all(fmt.index_path(root, state["name"], a).exists() for a in fmt.INDEX_ARRAYS)


def remove_after(root: Path, keep: int) -> None:
    """Delete every shard, index file, state file and temporary file beyond the first `keep` shards."""
    root = Path(root)

    def stale(stem: str) -> bool:
        head = stem.split(".", 1)[0]
        return TMP_SUFFIX in stem or not head.isdigit() or int(head) >= keep

    for path in sorted((root / fmt.SHARDS_DIR).iterdir()):
        if stale(path.name) and path.is_dir():
            shutil.rmtree(path)
        elif stale(path.name):
            path.unlink()
    for folder in (root / fmt.INDEX_DIR, root / STATE_DIR):
        for path in sorted(folder.iterdir()):
            if path.name != "state.json" and path.name != "lock" and stale(path.name):
                path.unlink()
    for path in root.glob("*.tmp*"):
        path.unlink()
