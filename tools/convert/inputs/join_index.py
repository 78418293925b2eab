"""A compact map from a photo key to its image, for joining a metadata table to millions of images: entries
are appended to flat buffers and frozen into NumPy arrays, a fraction of a dict of tuples' memory; a lookup is a
binary search over 64-bit key hashes, slower than a dict's (both measured: docs/costs.md).

The first entry of a key wins, like dict.setdefault. A hash match is confirmed against the stored key, so a
hash collision never joins a photo to another photo's image.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from bisect import bisect_left
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

KINDS = ("file", "tar")
# one-to-one for every str: file names decoded with surrogateescape and JSON ids with lone surrogates alike
ENCODING = ("utf-8", "surrogatepass")


def key_hash(key: bytes) -> bytes:
    """8 bytes of blake2b, read little-endian: the sort key of an entry (equal keys, equal hashes; the converse
    is checked)."""
    return hashlib.blake2b(key, digest_size=8).digest()


def _narrow(values: NDArray) -> memoryview:
    """Non-negative integers as uint32 where they fit, else int64 (a copy: the wide buffer can be freed), read
    through a memoryview: an item is a Python int, faster to get than a NumPy scalar (docs/costs.md)."""
    return memoryview(values.astype(np.uint32 if values.max(initial=0) < 1 << 32 else np.int64))


class JoinIndex:
    """key -> ("file", path relative to the images folder) or ("tar", tar, member offset, member size, ext).

    `add_file` / `add_member` append (one kind per index), `freeze` sorts once, then `get` looks up.
    Held per entry: its hash (8 bytes), its place in the order of addition (4), the key (its bytes + 4),
    and the target (a file: its path's bytes + 4; a tar member: 21).
    """

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"join index kind {kind!r}: expected one of {KINDS}")
        self.kind = kind
        self._hashes = bytearray()  # 8 bytes an entry until freeze, then _sorted and _order
        self._keys, self._key_ends = bytearray(), array("q", [0])
        self._paths, self._path_ends = bytearray(), array("q", [0])  # "file" targets
        self._tars: list[str] = []  # "tar" targets: tar number, member offset, size, extension number
        self._tar_numbers: dict[str, int] = {}
        self._exts: list[str] = []
        self._tar, self._offset, self._size, self._ext = array("i"), array("q"), array("q"), array("B")
        self._sorted: memoryview | None = None  # the hashes in ascending order (uint64)
        self._order: memoryview | None = None  # the entry (its number in the order of addition) of each

    def __len__(self) -> int:
        return len(self._key_ends) - 1

    def _add_key(self, key: str) -> None:
        if self._sorted is not None:
            raise RuntimeError("the join index is frozen: add every entry before freeze()")
        data = key.encode(*ENCODING)
        self._hashes += key_hash(data)
        self._keys += data
        self._key_ends.append(len(self._keys))

    def add_file(self, key: str, path: str) -> None:
        if self.kind != "file":
            raise ValueError(f"add_file on a join index of kind {self.kind!r}")
        self._add_key(key)
        self._paths += path.encode(*ENCODING)
        self._path_ends.append(len(self._paths))

    def add_member(self, key: str, tar: str, offset: int, size: int, ext: str) -> None:
        if self.kind != "tar":
            raise ValueError(f"add_member on a join index of kind {self.kind!r}")
        self._add_key(key)
        number = self._tar_numbers.setdefault(tar, len(self._tars))
        if number == len(self._tars):
            self._tars.append(tar)
        if ext not in self._exts:
            self._exts.append(ext)  # a handful (tar_shards.IMAGE_EXTS): a list search is cheap
        self._tar.append(number)
        self._offset.append(offset)
        self._size.append(size)
        self._ext.append(self._exts.index(ext))

    def freeze(self) -> JoinIndex:
        """Sort the hashes (stably: among equal hashes the first added comes first), trim the buffers to size."""
        hashes = np.frombuffer(self._hashes, dtype="<u8")
        order = np.argsort(hashes, kind="stable")
        self._sorted = memoryview(hashes[order].astype(np.uint64, copy=False))
        self._order = _narrow(order)
        del hashes, order
        self._hashes = bytearray()
        # one buffer at a time, so that at most one is held twice
        self._key_ends = _narrow(np.frombuffer(self._key_ends, dtype=np.int64))
        self._path_ends = _narrow(np.frombuffer(self._path_ends, dtype=np.int64))
        self._keys = bytes(self._keys)
        self._paths = bytes(self._paths)
        self._tar = self._tar[:]
        self._offset = self._offset[:]
        self._size = self._size[:]
        self._ext = self._ext[:]
        self._tar_numbers = {}
        return self

    def get(self, key: str) -> tuple | None:
        """The target of the first entry added with `key`, or None."""
        if self._sorted is None:
            raise RuntimeError("the join index is not frozen: call freeze() after the last add")
        data = key.encode(*ENCODING)
        h = int.from_bytes(key_hash(data), "little")
        hashes, ends = self._sorted, self._key_ends
        at = bisect_left(hashes, h)  # the binary search of np.searchsorted, on Python ints
        while at < len(hashes) and hashes[at] == h:  # equal hashes: compare the keys, first added first
            i = self._order[at]
            if self._keys[ends[i] : ends[i + 1]] == data:
                return self._target(i)
            at += 1
        return None

    def _target(self, i: int) -> tuple:
        if self.kind == "file":
            return "file", bytes(self._paths[self._path_ends[i] : self._path_ends[i + 1]]).decode(*ENCODING)
        return "tar", self._tars[self._tar[i]], self._offset[i], self._size[i], self._exts[self._ext[i]]

    _ARRAYS = ("_sorted", "_order", "_keys", "_key_ends", "_paths", "_path_ends", "_tar", "_offset", "_size", "_ext")

    def save(self, folder: str | Path) -> Path:
        """Write the frozen index into `folder` (one .npy per array, index.json last: a folder without it is
        incomplete), for processes on other machines to map instead of listing the images again."""
        if self._sorted is None:
            raise RuntimeError("freeze() the join index before saving it")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.json").unlink(missing_ok=True)
        for name in self._ARRAYS:
            value = getattr(self, name)
            arr = np.frombuffer(value, dtype=np.uint8) if isinstance(value, (bytes, bytearray)) else np.asarray(value)
            np.save(folder / f"{name[1:]}.npy", arr)
        tmp = folder / f"index.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps({"kind": self.kind, "entries": len(self), "tars": self._tars, "exts": self._exts}))
        tmp.replace(folder / "index.json")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> JoinIndex:
        """A saved index, its arrays memory-mapped (processes on one machine share the pages)."""
        folder = Path(folder)
        meta = json.loads((folder / "index.json").read_text())
        index = cls(meta["kind"])
        index._tars, index._exts = list(meta["tars"]), list(meta["exts"])
        for name in cls._ARRAYS:
            arr = np.load(folder / f"{name[1:]}.npy", mmap_mode="r")
            setattr(index, name, memoryview(arr) if arr.size else memoryview(np.asarray(arr)))
        if len(index) != meta["entries"]:
            raise ValueError(f"{folder}: a join index of {meta['entries']} entries holds {len(index)}")
        return index
