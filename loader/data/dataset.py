"""Open a converted dataset: manifest, memory-mapped per-shard index, vocabularies and masks.

Opening costs O(number of shards), never O(number of images): arrays are memory-mapped on first
use, so the first batch of a billion-image dataset is as quick as that of a small one.

`root` may be an fsspec URL (s3://bucket/ds, gs://..., file://...): the dataset is then read through a
local mirror (loader/data/cache.py) whose small files and shards are fetched on first use.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data import checksums, storage
from tagstream.loader.data import format as fmt
from tagstream.loader.data.cache import Mirror
from tagstream.loader.data.manifest import read_manifest


class Dataset:
    """A read-only view of a dataset directory or URL (see tagstream.loader.data.format for the layout).

    For a URL, `root` is the local mirror under cache_dir (default remote.default_cache_dir()),
    `mirror` fetches what is missing (each file checked against its checksum as it arrives) and `source` is
    the URL; for a directory, mirror is None. verify: a local dataset's index arrays, vocabularies and masks
    are checked against their checksums before first use (once per machine, loader/data/checksums.py). retry: the
    mirror's policy (LoaderConfig.storage_timeout bounds what a stalled server costs).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        cache_dir: str | Path | None = None,
        verify: bool = False,
        retry: storage.Retry = storage.DEFAULT_RETRY,
    ):
        self.source = str(root)
        local = storage.local_path(root)
        if local is None:
            self.mirror: Mirror | None = Mirror.open(str(root), cache_dir, retry)
            local = self.mirror.root
        else:
            self.mirror = Mirror.attach(local, retry)  # a mirror opened by its directory (a worker's copy)
        self.root = Path(local)
        self.manifest = read_manifest(self.root)
        self.shards: list[dict] = self.manifest["shards"]
        counts = np.array([s["images"] for s in self.shards], dtype=np.int64)
        # shard_starts[k] = global index of shard k's first image; shard_starts[-1] = N
        self.shard_starts: NDArray[np.int64] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.num_images = int(self.manifest["images"])
        if self.shard_starts[-1] != self.num_images:
            raise fmt.FormatError(
                f"{self.root}: manifest says {self.num_images} images but its shards hold {self.shard_starts[-1]}"
            )
        self._index_cache: dict[tuple[int, str], np.ndarray] = {}
        self.verify = bool(verify) and self.mirror is None  # a mirror's files are checked as they download
        self.cache_dir = cache_dir  # where verification stamps go (checksums.check_once)

    def check_file(self, path: Path, expected: dict | None, what: str, record: str = "its recorded") -> None:
        """With verify: the file against its checksum record (none recorded, by an older tagstream: unchecked)."""
        if self.verify and expected is not None:
            checksums.check_once(path, expected, what, record, cache_dir=self.cache_dir)

    def __len__(self) -> int:
        return self.num_images

    @property
    def shard_names(self) -> list[str]:
        return [s["name"] for s in self.shards]

    def shard_path(self, shard: int) -> Path:
        return fmt.shard_path(self.root, self.shards[shard]["name"])

    def ensure_shard(self, shard: int) -> Path:
        """The shard's directory, downloaded and verified first when the dataset is remote and it is not here."""
        if self.mirror is not None:
            self.mirror.ensure_shard(self.shards[shard])
        return self.shard_path(shard)

    def _ensure(self, path: Path) -> Path:
        """A small file of the dataset, fetched first when remote and missing."""
        if self.mirror is not None and not path.exists():
            self.mirror.ensure_file(path.relative_to(self.root).as_posix())
        return path

    def locate(self, indices: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Global indices -> (shard number, local index); vectorised, bounds-checked."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_images):
            raise IndexError(f"image index out of range [0, {self.num_images})")
        shard = np.searchsorted(self.shard_starts, indices, side="right") - 1
        return shard, indices - self.shard_starts[shard]

    def image_sizes(self, indices: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(widths, heights) of images by global index, from the memory-mapped index; vectorised per shard."""
        shards, local = self.locate(indices)
        widths = np.empty(shards.shape[0], np.int64)
        heights = np.empty(shards.shape[0], np.int64)
        for shard in np.unique(shards).tolist():
            sel = shards == shard
            widths[sel] = self.index_array(shard, "width")[local[sel]]
            heights[sel] = self.index_array(shard, "height")[local[sel]]
        return widths, heights

    def content_boxes(self, indices: NDArray[np.int64]) -> NDArray[np.int64]:
        """(n, 4) content boxes (left, top, right, bottom: inside uniform borders) of images by global index;
        the whole frame in a shard without them (converted before they were stored)."""
        shards, local = self.locate(indices)
        out = np.zeros((shards.shape[0], 4), np.int64)
        for shard in np.unique(shards).tolist():
            sel = shards == shard
            if self.has_index_array(shard, "content_box"):
                out[sel] = fmt.unpack_boxes(self.index_array(shard, "content_box")[local[sel]])
            else:
                out[sel, 2] = self.index_array(shard, "width")[local[sel]]
                out[sel, 3] = self.index_array(shard, "height")[local[sel]]
        return out

    def index_array(self, shard: int, name: str) -> np.ndarray:
        """One per-shard index array (memory-mapped, read-only)."""
        fmt.index_dtype(name)  # a ValueError naming the known arrays
        key = (shard, name)
        if key not in self._index_cache:
            if name in ("width", "height"):  # checked together: no decoder is asked for an impossible image
                width, height = self._load_index(shard, "width"), self._load_index(shard, "height")
                fmt.check_image_sizes(width, height, f"{self.root}: index of shard {self.shards[shard]['name']}")
                self._index_cache[(shard, "width")], self._index_cache[(shard, "height")] = width, height
            elif name in ("tag_offsets", "tag_ids"):  # a CSR read by kernels that do not bounds-check
                offsets, ids = self._load_index(shard, "tag_offsets"), self._load_index(shard, "tag_ids")
                self._check_csr(shard, offsets, ids)
                self._index_cache[(shard, "tag_offsets")], self._index_cache[(shard, "tag_ids")] = offsets, ids
            else:
                self._index_cache[key] = self._load_index(shard, name)
        return self._index_cache[key]

    def has_index_array(self, shard: int, name: str) -> bool:
        """Whether the shard's index holds array `name` (an optional one, fmt.OPTIONAL_INDEX_ARRAYS, may be absent)."""
        fmt.index_dtype(name)
        return (shard, name) in self._index_cache or self._ensure(
            fmt.index_path(self.root, self.shards[shard]["name"], name)
        ).exists()

    def every_shard_has(self, name: str) -> bool:
        """Whether every shard's index holds optional array `name` (a dataset converted before it existed has none)."""
        return all(self.has_index_array(k, name) for k in range(len(self.shards)))

    def _check_csr(self, shard: int, offsets: np.ndarray, ids: np.ndarray) -> None:
        where = f"{self.root}: index of shard {self.shards[shard]['name']}"
        if offsets[0] != 0 or offsets[-1] != ids.shape[0] or (offsets.shape[0] > 1 and np.diff(offsets).min() < 0):
            raise fmt.FormatError(f"{where}: tag_offsets is not a CSR over tag_ids ({ids.shape[0]} entries)")
        tags = self.manifest.get("tags")
        if ids.shape[0] and (ids.min() < 0 or (isinstance(tags, int) and ids.max() >= tags)):
            raise fmt.FormatError(f"{where}: tag_ids holds ids outside [0, {tags}) (the manifest's tag count)")

    def _load_index(self, shard: int, name: str) -> np.ndarray:
        """Map one index file and check it against the manifest (dtype, length): O(1), once per process."""
        images = int(self.shards[shard]["images"])
        path = self._ensure(fmt.index_path(self.root, self.shards[shard]["name"], name))
        if not path.exists():
            raise fmt.FormatError(f"{self.root}: missing index file {path.name} of shard {self.shards[shard]['name']}")
        digest = self.shards[shard].get("index", {}).get(name)
        self.check_file(path, digest and {"sha256": digest}, f"index file {path.name}", "the manifest's")
        array = load_npy(path)
        expected = {"tag_offsets": images + 1, "tag_ids": None}.get(name, images)
        if array.dtype != np.dtype(fmt.index_dtype(name)) or array.ndim != 1 or expected not in (None, array.shape[0]):
            raise fmt.FormatError(
                f"{path}: {array.dtype} of shape {array.shape}, expected 1-d {fmt.index_dtype(name)} "
                f"of {expected if expected is not None else 'any'} entries (the manifest says {images} images)"
            )
        return array

    def global_array(self, name: str) -> np.ndarray:
        """An index array over all images (concatenated; O(N) — for tools, not the hot path).

        For "tag_offsets" the offsets are rebased so the result is one CSR over all images,
        to be used with global_array("tag_ids").
        """
        parts = [self.index_array(k, name) for k in range(len(self.shards))]
        if name != "tag_offsets":
            dtype = np.dtype(fmt.index_dtype(name))
            return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)
        out = [np.zeros(1, np.int64)]
        base = 0
        for p in parts:
            out.append(np.asarray(p[1:], dtype=np.int64) + base)
            base += int(p[-1])
        return np.concatenate(out)

    @cached_property
    def tags(self) -> list[tuple[int, str, int]]:
        """The raw tag table: (id, canonical text, count), by id."""
        rows = []
        path = self._ensure(self.root / fmt.TAGS)
        if not path.exists():
            raise fmt.FormatError(f"{self.root}: missing {fmt.TAGS}")
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip() or line.startswith("id\t"):
                    continue
                tid, text, count = line.rstrip("\n").split("\t")
                rows.append((int(tid), text, int(count)))
        return rows

    def vocab_dir(self, name: str) -> Path:
        rel = f"{fmt.VOCAB_DIR}/{fmt.check_name(name, 'vocabulary')}"
        return self.mirror.ensure_dir(rel) if self.mirror is not None else self.root / rel

    def vocab_names(self) -> list[str]:
        if self.mirror is not None:
            return self.mirror.vocab_names()
        d = self.root / fmt.VOCAB_DIR
        return sorted(p.name for p in d.iterdir() if (p / "vocab.json").exists()) if d.exists() else []

    def mask_names(self) -> list[str]:
        if self.mirror is not None:
            return self.mirror.mask_names()
        d = self.root / fmt.MASKS_DIR
        return sorted(p.stem for p in d.glob("*.npy")) if d.exists() else []

    def load_mask(self, name: str) -> NDArray[np.bool_]:
        """masks/NAME.npy: True = image excluded from sampling."""
        path = self._ensure(fmt.mask_path(self.root, name))
        if not path.exists():
            raise ValueError(f"{self.root}: no mask {name!r}; masks here: {self.mask_names() or 'none'}")
        if self.verify:
            self.check_file(path, checksums.read_sums(checksums.mask_sums_path(path)), f"mask {name}")
        mask = load_npy(path)
        if mask.shape != (self.num_images,) or mask.dtype != np.bool_:
            raise fmt.FormatError(
                f"{path}: mask must be bool of shape ({self.num_images},), got {mask.dtype} {mask.shape}"
            )
        return mask


def load_npy(path: Path) -> np.ndarray:
    """np.load(path, mmap_mode="r"), with a truncated or garbled file a FormatError naming it."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises ValueError, OSError, EOFError, SyntaxError,
        # tokenize.TokenError... on a garbled or short file: every one of them means this file is damaged
        why = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise fmt.FormatError(f"{path}: not a readable .npy array ({why})") from None
