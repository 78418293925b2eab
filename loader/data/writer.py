"""The dataset writer, beside its reader (loader/data/dataset.py): every writer — conversion, the loader
benchmark's datasets, test fixtures — goes through it, so the layout of loader/data/format.py is written in one place.

A shard's records go to shards/NNNNN.lmdb.tmp in one write transaction; on commit its index arrays are
written atomically and the directory is renamed to its final name. tags.tsv and the manifest come last:
a dataset whose manifest exists is whole.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data import format as fmt
from tagstream.loader.data.checksums import entry_of_file, mask_sums_path, write_mask_sums
from tagstream.loader.data.manifest import MANIFEST_FILES, tool_version
from tagstream.loader.data.staging import Staged

TMP_SUFFIX = ".tmp"


class ShardWriter:
    """One shard: `add` records in local-index order, then `commit` (durable under its final name) or `abort`."""

    def __init__(self, root: str | Path, shard: int):
        self.root = Path(root)
        self.shard = shard
        self.name = fmt.shard_name(shard)
        self.final = fmt.shard_path(self.root, self.name)
        self.tmp = self.final.with_name(self.final.name + TMP_SUFFIX)
        self.offsets: list[int] = [0]
        self.tag_ids: list[int] = []
        self.width: list[int] = []
        self.height: list[int] = []
        self.phash: list[int] = []
        self.content_box: list[tuple[int, int, int, int]] = []
        self.digest: list[int] = []
        self._env: Any = None
        self._txn: Any = None

    def __len__(self) -> int:
        return len(self.width)

    def add(
        self,
        image: bytes,
        tag_ids: Sequence[int],
        source: str,
        *,
        width: int,
        height: int,
        phash: int = 0,
        content_box: Sequence[int] | None = None,
    ) -> None:
        """Append the next record (key = its local index; raw tag ids stored sorted and unique); content_box
        (left, top, right, bottom) defaults to the whole image; the digest of the image bytes is taken here."""
        if self._env is None:
            if self.tmp.exists():
                shutil.rmtree(self.tmp)
            self.tmp.parent.mkdir(parents=True, exist_ok=True)
            self._env = fmt.open_env(self.tmp, write=True)
            self._txn = self._env.begin(write=True)
        ids = sorted({int(t) for t in tag_ids})
        self._txn.put(fmt.encode_key(len(self)), fmt.pack_record(image, ids, source), append=True)
        self.tag_ids.extend(ids)
        self.offsets.append(len(self.tag_ids))
        self.width.append(int(width))
        self.height.append(int(height))
        self.phash.append(int(phash))
        self.content_box.append(tuple(content_box) if content_box is not None else (0, 0, int(width), int(height)))
        self.digest.append(fmt.image_digest(image))

    def abort(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._env.close()
            self._env = self._txn = None
        if self.tmp.exists():
            shutil.rmtree(self.tmp)

    def commit(self) -> dict:
        """Make the shard durable; returns its manifest entry {name, images, bytes, sha256, index}."""
        if self._txn is None:
            raise ValueError("cannot commit an empty shard")
        self._txn.commit()
        self._env.sync(True)
        self._env.close()
        self._env = self._txn = None
        data = self.tmp / "data.mdb"
        entry = {"name": self.name, "images": len(self), "bytes": data.stat().st_size, "sha256": fmt.file_sha256(data)}
        entry["index"] = write_index(
            self.root,
            self.name,
            tag_offsets=self.offsets,
            tag_ids=self.tag_ids,
            width=self.width,
            height=self.height,
            phash=self.phash,
            content_box=fmt.pack_boxes(np.array(self.content_box, np.int64)),
            digest=np.array(self.digest, np.uint64),
        )
        if self.final.exists():  # left by a run killed between the rename and its caller's commit record
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
        fmt.fsync_dir(self.final.parent)
        return entry


def write_index(root: str | Path, name: str, **arrays: Any) -> dict[str, str]:
    """A shard's index arrays (every name of format.INDEX_ARRAYS, any of format.OPTIONAL_INDEX_ARRAYS, as
    their dtypes), each written atomically, the optional ones first: a shard whose required arrays exist has
    all of its arrays; returns their sha256s (the manifest entry's "index"). Alone, without records, it makes an
    index-only dataset (sampling and vocabulary tests and benchmarks)."""
    if not set(fmt.INDEX_ARRAYS) <= set(arrays) <= set(fmt.INDEX_ARRAYS) | set(fmt.OPTIONAL_INDEX_ARRAYS):
        raise ValueError(
            f"index arrays {sorted(arrays)} must be exactly {sorted(fmt.INDEX_ARRAYS)}, "
            f"with any of {sorted(fmt.OPTIONAL_INDEX_ARRAYS)}"
        )
    n = len(arrays["width"])
    per_image = [a for a in arrays if a not in ("tag_offsets", "tag_ids")]
    if len(arrays["tag_offsets"]) != n + 1 or any(len(arrays[a]) != n for a in per_image):
        raise ValueError(f"shard {name}: index arrays disagree on the image count {n}")
    (Path(root) / fmt.INDEX_DIR).mkdir(parents=True, exist_ok=True)
    digests = {}
    for key in sorted(arrays, key=lambda a: a in fmt.INDEX_ARRAYS):
        path = fmt.index_path(root, name, key)
        fmt.save_npy_atomic(path, np.asarray(arrays[key], dtype=fmt.index_dtype(key)))
        digests[key] = fmt.file_sha256(path)
    return digests


def write_tags(root: str | Path, tags: Sequence[str], counts: NDArray[np.int64]) -> None:
    """tags.tsv: id, canonical text, number of images carrying it."""
    rows = "".join(f"{i}\t{t}\t{int(c)}\n" for i, (t, c) in enumerate(zip(tags, counts)))
    fmt.write_text_atomic(Path(root) / fmt.TAGS, "id\ttag\tcount\n" + rows)


def write_manifest(root: str | Path, shards: Sequence[dict], *, tags: int, source: dict, **extra: Any) -> dict:
    """manifest.json, written last (its presence means the dataset is whole): format, version, image and byte
    totals, the shards' entries from ShardWriter.commit, the raw tag count, the source, the tool, the checksums of
    tags.tsv and rejects.jsonl; plus `extra` keys of the writer (conversion adds inputs, rejects, options). A shard
    entry without index checksums (committed by an older tagstream, a resumed conversion) gets them from its files."""
    root = Path(root)
    entries = []
    for s in shards:
        entry = {k: s[k] for k in ("name", "images", "bytes", "sha256")}
        entry["index"] = s.get("index") or {
            a: fmt.file_sha256(fmt.index_path(root, s["name"], a))
            for a in (*fmt.INDEX_ARRAYS, *fmt.OPTIONAL_INDEX_ARRAYS)
            if fmt.index_path(root, s["name"], a).exists()  # an index-only dataset's shards have none
        }
        entries.append(entry)
    files = {name: entry_of_file(root / name) for name in MANIFEST_FILES if (root / name).is_file()}
    manifest = {
        "format": fmt.FORMAT_NAME,
        "version": fmt.FORMAT_VERSION,
        "images": sum(int(s["images"]) for s in shards),
        "bytes": sum(int(s["bytes"]) for s in shards),
        "shards": entries,
        "files": files,
        "checksum": {"algorithm": "sha256", "covers": ["shards/NNNNN.lmdb/data.mdb", "index/*.npy", *files]},
        "tags": int(tags),
        "source": source,
        "tool": {"name": "tagstream", "version": tool_version()},
        **extra,
    }
    fmt.write_json_atomic(root / fmt.MANIFEST, manifest)
    return manifest


def write_mask(root: str | Path, name: str, mask: NDArray[np.bool_], *, into: Path | None = None) -> Path:
    """masks/NAME.npy: bool (N,), True = never drawn (nothing is deleted), with its checksum file masks/NAME.json.
    Written into `into`, the folder of a stage_mask build that renames them into place (the checksum file before
    the array, so a reader never meets an unchecked mask), or else through one of its own (exclusive, renamed
    when whole)."""
    path = fmt.mask_path(root, name)
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.ndim != 1:
        raise ValueError(f"mask {name!r} must be a 1-D bool array, got {mask.dtype} {mask.shape}")
    if into is not None:
        np.save(into / path.name, mask)
        write_mask_sums(into / path.name, entry_of_file(into / path.name))
        return path
    with stage_mask(root, name, outputs=mask_outputs(name)) as tmp:
        np.save(tmp / path.name, mask)
        write_mask_sums(tmp / path.name, entry_of_file(tmp / path.name))
    return path


def mask_outputs(name: str) -> tuple[str, str]:
    """The files a mask is: its checksum file, then the array (renamed into masks/ in this order)."""
    npy = fmt.mask_path(Path(), name).name
    return mask_sums_path(Path(npy)).name, npy


def stage_mask(root: str | Path, name: str, *, outputs: Sequence[str]) -> Staged:
    """The exclusive build of mask NAME's files (`outputs`, renamed into masks/ in that order: NAME.npy last, since
    readers look for it); a second concurrent builder of NAME is refused at once. A finished NAME is replaced."""
    path = fmt.mask_path(root, name)
    return Staged(path.parent, name, what="mask", marker=path.name, replace=True, outputs=outputs)
