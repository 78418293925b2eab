"""ShardStore: read a record by global image index from the LMDB shards, opening each shard lazily
in the process that reads it (py-lmdb environments must never cross a fork), so a DALI worker only
ever opens the shards its plan touches; the trade-off is one `lmdb.open` per shard per process."""

from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import Any

from tagstream.loader import format as fmt
from tagstream.loader.dataset import Dataset

_ENVS: dict[str, Any] = {}  # this process's open environments by path (lmdb refuses a second open)
_ENVS_PID = -1


def _open_env(path: Path) -> Any:
    """The process-wide read-only environment of a shard, opened on first use in this process."""
    global _ENVS_PID
    if _ENVS_PID != os.getpid():
        # Handles inherited through fork are never used here, but py-lmdb refuses to open a file that
        # is still open in this process, and an inherited handle stays "open" until it is closed or
        # garbage-collected (which another live reference can delay): close this process's copies.
        # Read-only, lock-free environments: closing unmaps this process's view only.
        for env in _ENVS.values():
            env.close()
        _ENVS.clear()
        _ENVS_PID = os.getpid()
    key = str(Path(path).resolve())
    env = _ENVS.get(key)
    if env is None:
        env = _ENVS[key] = fmt.open_env(Path(key))
    return env


def close_all() -> None:
    """Close every environment this process opened (stores reopen on their next read)."""
    if _ENVS_PID == os.getpid():
        for env in _ENVS.values():
            env.close()
    _ENVS.clear()


class ShardStore:
    """Global image index -> (shard, key) -> record bytes, image bytes or the parsed record.

    Picklable and fork-safe: the open environments are keyed by the process id that opened them and
    are dropped when pickled, so a copy in a forked or spawned worker reopens its own.
    Errors name the shard and the key: a missing shard directory, a missing key, a record that
    does not parse all raise `format.FormatError`.
    """

    def __init__(self, dataset: Dataset | str | Path):
        self.dataset = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
        self._pid = -1
        self._envs: dict[int, Any] = {}
        self._starts: list[int] = [int(v) for v in self.dataset.shard_starts]

    def __getstate__(self) -> dict:
        # a spawned worker reopens the dataset (cheap: manifest only) instead of receiving its mmaps
        return {"root": str(self.dataset.root)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"])

    def _env(self, shard: int) -> Any:
        if self._pid != os.getpid():
            # inherited handles belong to the parent; never use (or close) them here
            self._pid = os.getpid()
            self._envs = {}
        env = self._envs.get(shard)
        if env is None:
            path = self.dataset.shard_path(shard)
            if not (path / "data.mdb").exists():
                raise fmt.FormatError(f"{self.dataset.root}: shard {self.dataset.shard_names[shard]} is missing ({path})")
            env = self._envs[shard] = _open_env(path)
        return env

    @property
    def open_shards(self) -> list[int]:
        """The shards this process has opened (tests use it to check shard ownership)."""
        return sorted(self._envs) if self._pid == os.getpid() else []

    def locate(self, index: int) -> tuple[int, int]:
        """Global index -> (shard number, local index); per sample, so bisect on a list, not NumPy (~10x faster)."""
        index = int(index)
        if not 0 <= index < self.dataset.num_images:
            raise IndexError(f"image index {index} out of range [0, {self.dataset.num_images})")
        starts = self._starts
        shard = bisect.bisect_right(starts, index) - 1
        return shard, index - starts[shard]

    def where(self, index: int) -> str:
        """A human-readable address of an image, for error messages."""
        shard, local = self.locate(index)
        return f"shard {self.dataset.shard_names[shard]} key {local} (image {index})"

    def read_bytes(self, index: int) -> bytes:
        """The raw msgpack value of image `index`."""
        shard, local = self.locate(index)
        env = self._env(shard)
        with env.begin(buffers=False) as txn:
            value = txn.get(fmt.encode_key(local))
        if value is None:
            raise fmt.FormatError(
                f"{self.dataset.root}: shard {self.dataset.shard_names[shard]} has no key {local} (image {index})"
            )
        return value

    def read(self, index: int) -> dict[str, Any]:
        """The parsed record {"image", "tags", "source"} of image `index`."""
        value = self.read_bytes(index)
        try:
            return fmt.unpack_record(value)
        except fmt.FormatError as exc:
            raise fmt.FormatError(f"{self.dataset.root}: {self.where(index)}: {exc}") from exc

    def read_image(self, index: int) -> bytes:
        """The encoded image bytes of image `index`; an empty image is an error naming shard and key."""
        image = self.read(index)["image"]
        if not image:
            raise fmt.FormatError(f"{self.dataset.root}: {self.where(index)}: empty image bytes")
        return image

    def close(self) -> None:
        """Forget this store's handles; the process-wide environments stay open for other stores."""
        self._envs = {}
