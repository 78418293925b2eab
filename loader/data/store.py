"""ShardStore: read a record by global image index from the LMDB shards, opening each shard lazily
in the process that reads it (py-lmdb environments must never cross a fork), so a DALI worker only
ever opens the shards its plan touches; the trade-off is one `lmdb.open` per shard per process."""

from __future__ import annotations

import bisect
import ctypes
import functools
import mmap
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data import checksums, records
from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.retries import DEFAULT_RETRY, Retry

RELEASE_EVERY = 1024  # records a process reads between handing its shards' mapped pages back (release_pages)
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
    """Close every environment this process opened (stores reopen on their next read). Never while a
    pipeline may still read a batch source's views of the maps (loader/pipeline/batch_source.py): closing unmaps them."""
    if _ENVS_PID == os.getpid():
        for env in _ENVS.values():
            env.close()
    _ENVS.clear()


def mapped_ranges(path: str | Path) -> list[tuple[int, int]]:
    """The (start, length) of every read-only map of file `path` in this process (/proc/self/maps); [] where there
    is no /proc."""
    name = os.path.realpath(path)
    try:
        with open("/proc/self/maps") as f:
            lines = f.readlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and "w" not in fields[1] and fields[5].rstrip("\n") == name:
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            out.append((lo, hi - lo))
    return out


def release_pages(ranges: list[tuple[int, int]]) -> int:
    """Drop this process's page-table entries of read-only shared file maps (madvise MADV_DONTNEED); returns the
    bytes advised, 0 where madvise is missing.

    Why: every shard page a process reads stays mapped, so its RSS grew to every byte it had read (7.2 GB of
    `embed` over 10^6 images was its worker's map of the shards: docs/scale.md). A shared file map loses nothing:
    the next read faults the page back from the page cache, so views already handed out stay valid."""
    libc = _libc()
    if libc is None:
        return 0
    return sum(n for lo, n in ranges if libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(n), mmap.MADV_DONTNEED) == 0)


@functools.cache
def _libc() -> Any:
    """The C library with madvise's argument types set, once a process; None where mmap has no MADV_DONTNEED."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc


def check_shard_file(dataset: Dataset, shard: int) -> None:
    """The shard's data.mdb exists with the manifest's byte size, checked BEFORE LMDB maps it: LMDB maps
    past the end of a truncated file and the first read there kills the process with SIGBUS."""
    path = dataset.shard_path(shard) / "data.mdb"
    name = dataset.shard_names[shard]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise fmt.FormatError(f"{dataset.root}: shard {name} is missing ({path})") from None
    except OSError as exc:
        raise fmt.FormatError(f"{path}: cannot read shard {name} ({exc})") from None
    expected = dataset.shards[shard].get("bytes")
    if expected is None:
        raise fmt.FormatError(
            f"{dataset.root}: the manifest gives no byte size of shard {name}; it cannot be opened safely"
        )
    if size != expected:
        raise fmt.FormatError(
            f"{path}: shard {name} has {size} bytes, the manifest says {expected} (truncated or replaced); "
            "run `tagstream verify` on the dataset"
        )
    problem = fmt.lmdb_file_problem(path)
    if problem:
        raise fmt.FormatError(f"{path}: shard {name} {problem}; run `tagstream verify` on the dataset")


def verify_shard_content(dataset: Dataset, shard: int, *, cache_dir: str | Path | None = None) -> None:
    """The shard's bytes hash to the manifest's sha256, checked once per machine and file version
    (checksums.check_once: a stamp under cache_dir/verified, by default ~/.cache/tagstream/verified). A mismatch is
    a FormatError naming the shard: a byte flipped since conversion never trains silently."""
    name, expected = dataset.shard_names[shard], dataset.shards[shard].get("sha256")
    if not expected:
        raise fmt.FormatError(f"{dataset.root}: the manifest gives no sha256 of shard {name}; it cannot be verified")
    path = dataset.shard_path(shard) / "data.mdb"
    checksums.check_once(path, {"sha256": expected}, f"shard {name}", "the manifest's", cache_dir=cache_dir)


def check_shard_files(dataset: Dataset, shards: list[int] | None = None) -> fmt.FormatError | None:
    """The first shard (of `shards`, default all) whose file is missing or has another size, as an error; O(shards)."""
    for shard in range(len(dataset.shards)) if shards is None else shards:
        try:
            check_shard_file(dataset, shard)
        except fmt.FormatError as exc:
            return exc
    return None


class ShardStore:
    """Global image index -> (shard, key) -> record bytes, image bytes or the parsed record.

    Picklable and fork-safe: the open environments are keyed by the process id that opened them and
    are dropped when pickled, so a copy in a forked or spawned worker reopens its own.
    Errors name the shard and the key: a missing shard directory, a missing key, a record that
    does not parse all raise `format.FormatError`.
    """

    def __init__(
        self,
        dataset: Dataset | str | Path,
        *,
        verify: bool = False,
        cache_dir: str | Path | None = None,
        retry: Retry | None = None,
    ) -> None:
        self.dataset = dataset if isinstance(dataset, Dataset) else Dataset(dataset, retry=retry or DEFAULT_RETRY)
        self.verify = bool(verify)  # each local shard's sha256 checked before its first read (verify_shard_content)
        self.cache_dir = str(cache_dir) if cache_dir else None  # the user's cache directory: the stamps go under it
        self._pid = -1
        self._envs: dict[int, Any] = {}
        self._fds: dict[int, int] = {}  # each open shard's data.mdb, to see it cut short under the map (fstat)
        self._ranges: dict[int, list[tuple[int, int]]] = {}  # each open shard's map in this process (mapped_ranges)
        self._touched: set[int] = set()  # shards read since their pages were last released
        self._reads = 0  # records read since then
        self._starts: list[int] = [int(v) for v in self.dataset.shard_starts]

    def __getstate__(self) -> dict:
        # a spawned worker reopens the dataset (cheap: manifest only) instead of receiving its mmaps
        mirror = self.dataset.mirror
        return {
            "root": str(self.dataset.root),
            "verify": self.verify,
            "cache_dir": self.cache_dir,
            "retry": mirror and mirror.retry,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(
            state["root"], verify=state.get("verify", False), cache_dir=state.get("cache_dir"), retry=state.get("retry")
        )

    def _env(self, shard: int) -> Any:
        if self._pid != os.getpid():
            # inherited handles belong to the parent; never use (or close) them here
            self._pid = os.getpid()
            self._envs = {}
            self._fds = {}
            self._ranges = {}
            self._touched = set()
            self._reads = 0
        self._touched.add(shard)
        env = self._envs.get(shard)
        if env is not None:
            # once per call (a sample on the CPU path, a shard's share of a batch on the batch path; docs/costs.md):
            # a file truncated under LMDB's map would kill this process with SIGBUS at the next read past its
            # end; seen here, it is an error naming the shard (only a truncation racing this very read is not)
            size = os.fstat(self._fds[shard]).st_size
            if size != self.dataset.shards[shard]["bytes"]:
                raise fmt.FormatError(
                    f"{self.dataset.shard_path(shard) / 'data.mdb'}: shard {self.dataset.shard_names[shard]} was cut "
                    f"to {size} bytes while being read (the manifest says {self.dataset.shards[shard]['bytes']})"
                )
        else:
            path = self.dataset.ensure_shard(shard)  # a remote dataset's shard: downloaded and verified first
            check_shard_file(self.dataset, shard)
            if self.verify and self.dataset.mirror is None:
                verify_shard_content(self.dataset, shard, cache_dir=self.cache_dir)
            try:
                env = _open_env(path)
            except Exception as exc:  # lmdb.Error subclasses (invalid file, corrupted, version mismatch)
                raise fmt.FormatError(
                    f"{path}: LMDB cannot open shard {self.dataset.shard_names[shard]} ({type(exc).__name__}: {exc}); "
                    "run `tagstream verify` on the dataset"
                ) from None
            self._envs[shard] = env
            self._fds[shard] = os.open(path / "data.mdb", os.O_RDONLY | os.O_CLOEXEC)
            self._ranges[shard] = mapped_ranges(path / "data.mdb")
        return env

    def _count_reads(self, records: int) -> None:
        """After every RELEASE_EVERY records, the pages of the shards read since leave this process's RSS
        (release_pages): its memory is bounded by what it reads in between, not by everything it has read."""
        self._reads += records
        if self._reads >= RELEASE_EVERY:
            release_pages([r for shard in self._touched for r in self._ranges.get(shard, ())])
            self._reads = 0
            self._touched = set()

    @property
    def open_shards(self) -> list[int]:
        """The shards this process has opened (tests use it to check shard ownership)."""
        return sorted(self._envs) if self._pid == os.getpid() else []

    def locate(self, index: int) -> tuple[int, int]:
        """Global index -> (shard number, local index); per sample, so bisect on a list, not NumPy's searchsorted
        (slower for one element: docs/costs.md)."""
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
        self._count_reads(1)
        try:
            with env.begin(buffers=False) as txn:
                value = txn.get(fmt.encode_key(local))
        except Exception as exc:  # lmdb.Error subclasses on damaged pages (PageNotFoundError, CorruptedError, ...)
            raise fmt.FormatError(
                f"{self.dataset.root}: {self.where(index)}: LMDB read failed ({type(exc).__name__}: {exc})"
            ) from None
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

    def image_buffers(
        self,
        indices: NDArray[np.int64],
        widths: NDArray[np.int64] | None = None,
        heights: NDArray[np.int64] | None = None,
        wrap: Callable[[memoryview], Any] | None = None,
    ) -> tuple[list, list[Any]]:
        """The JPEG bytes of a batch of images as views of LMDB's memory map (nothing copied), each passed
        through `wrap` if given (the batch source wraps them for DALI), and the read transactions (one per
        shard) that keep them valid: hold the second item as long as the views are in use. Each JPEG's frame
        header must say the image's size (`widths`, `heights`: the index's, read here when not given).
        One C call a batch (loader/data/records.py). A record not laid out as format.pack_record writes it is
        parsed and its image copied, as read_image does; errors name the shard and key like read_image's."""
        indices = np.asarray(indices, dtype=np.int64)
        shards, local = self.dataset.locate(indices)
        if widths is None or heights is None:
            widths, heights = self.dataset.image_sizes(indices)
        touched, slots = np.unique(shards, return_inverse=True)
        txns = [self._env(shard).begin(buffers=True) for shard in touched.tolist()]
        self._count_reads(len(indices))
        try:
            items, _, _ = records.images([txn.get for txn in txns], slots, local, widths, heights, wrap)
        except Exception:  # lmdb.Error subclasses on damaged pages: the slow path below names the sample
            items = None
        if items is None:  # a record in another layout, or one to name in an error
            items = self._image_buffers_one_by_one(indices, shards, local, txns, slots, widths, heights, wrap)
        return items, txns

    def _image_buffers_one_by_one(self, indices, shards, local, txns, slots, widths, heights, wrap) -> list:
        """image_buffers' Python path: parses any record layout, and raises the error that names a bad sample."""
        buffers: list[memoryview] = []
        for i, slot in enumerate(slots.tolist()):
            try:
                value = txns[slot].get(fmt.encode_key(int(local[i])))
            except Exception as exc:  # lmdb.Error subclasses on damaged pages
                raise fmt.FormatError(
                    f"{self.dataset.root}: {self.where(int(indices[i]))}: LMDB read failed ({type(exc).__name__}: {exc})"
                ) from None
            if value is None:
                raise fmt.FormatError(
                    f"{self.dataset.root}: shard {self.dataset.shard_names[shards[i]]} has no key {local[i]} (image {indices[i]})"
                )
            span = fmt.image_span(value)
            image = memoryview(self.read_image(int(indices[i]))) if span is None else value[span[0] : span[0] + span[1]]
            if len(image) < 2 or image[0] != 0xFF or image[1] != 0xD8:
                what = "empty image bytes" if len(image) == 0 else "image is not a JPEG"
                raise fmt.FormatError(f"{self.dataset.root}: {self.where(int(indices[i]))}: {what}")
            buffers.append(image)
        k = records.first_size_mismatch(buffers, widths, heights)
        if k >= 0:
            try:
                what = "its JPEG header says {} x {}, the index {} x {}".format(
                    *records.frame_size(buffers[k]), widths[k], heights[k]
                )
            except ValueError:
                what = "no JPEG frame header before the first scan"
            raise fmt.FormatError(
                f"{self.dataset.root}: {self.where(int(indices[k]))}: cannot decode: {what}; "
                "run `tagstream verify --deep` on the dataset"
            )
        return buffers if wrap is None else [wrap(b) for b in buffers]

    def close(self) -> None:
        """Forget this store's handles; the process-wide environments stay open for other stores."""
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._envs = {}
        self._fds = {}
        self._ranges = {}
        self._touched = set()
