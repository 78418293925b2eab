"""`tagstream verify`: recompute every shard checksum and parse every record; name each damaged shard.

Streaming: each shard is read once for its checksum (4 MiB blocks) and once for its records, so memory
stays flat for any dataset size. A shard whose checksum fails is not opened with LMDB at all: LMDB
trusts its page pointers, and a damaged file could crash the reader instead of being reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tagstream.loader import format as fmt


@dataclass(frozen=True)
class Problem:
    shard: str | None  # shard name, or None for dataset-level files
    what: str

    def __str__(self) -> str:
        return f"shard {self.shard}: {self.what}" if self.shard is not None else self.what


@dataclass
class VerifyReport:
    root: str
    shards: int = 0
    images: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def damaged_shards(self) -> list[str]:
        return sorted({p.shard for p in self.problems if p.shard is not None})


def _read_tags(root: Path) -> tuple[int | None, str | None]:
    path = root / fmt.TAGS
    if not path.exists():
        return None, f"missing {fmt.TAGS}"
    n = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if lineno == 1 and line.startswith("id\t"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3 or not parts[0].isdigit() or int(parts[0]) != n or not parts[2].isdigit():
                return None, f"{fmt.TAGS} line {lineno} is not 'id<TAB>tag<TAB>count' with ids 0, 1, 2, ..."
            n += 1
    return n, None


def _check_index(root: Path, name: str, images: int) -> tuple[dict[str, np.ndarray], list[str]]:
    arrays, problems = {}, []
    for array, dtype in fmt.INDEX_ARRAYS.items():
        path = fmt.index_path(root, name, array)
        if not path.exists():
            problems.append(f"missing index file {path.name}")
            continue
        try:
            a = np.load(path, mmap_mode="r")
        except Exception as exc:  # numpy raises ValueError/OSError/EOFError on truncated or garbled .npy
            problems.append(f"index file {path.name} is unreadable ({type(exc).__name__}: {exc})")
            continue
        if a.dtype != np.dtype(dtype) or a.ndim != 1:
            problems.append(f"index file {path.name} has dtype {a.dtype} shape {a.shape}, expected 1-d {dtype}")
            continue
        arrays[array] = a
    for array in ("width", "height", "phash"):
        if array in arrays and len(arrays[array]) != images:
            problems.append(f"count mismatch: index {array} has {len(arrays[array])} entries, manifest says {images} images")
    if "tag_offsets" in arrays:
        off = arrays["tag_offsets"]
        if len(off) != images + 1:
            problems.append(f"count mismatch: index tag_offsets has {len(off)} entries, expected {images + 1}")
        elif off[0] != 0 or np.any(np.diff(off) < 0) or ("tag_ids" in arrays and off[-1] != len(arrays["tag_ids"])):
            problems.append("index tag_offsets is not a valid CSR over tag_ids")
    return arrays, problems


def _check_records(root: Path, name: str, images: int, arrays: dict[str, np.ndarray], num_tags: int | None) -> list[str]:
    """Open the (checksum-verified) shard and parse every record; compare with the index."""

    try:
        env = fmt.open_env(fmt.shard_path(root, name))
    except Exception as exc:  # lmdb.Error subclasses: invalid file, version mismatch, ...
        return [f"LMDB cannot open the shard ({type(exc).__name__}: {exc})"]
    problems: list[str] = []
    off, ids = arrays.get("tag_offsets"), arrays.get("tag_ids")
    csr_ok = off is not None and ids is not None and len(off) == images + 1
    try:
        with env.begin() as txn:
            entries = txn.stat()["entries"]
            if entries != images:
                problems.append(f"count mismatch: the shard holds {entries} records, manifest says {images}")
            for expected, (key, value) in enumerate(txn.cursor()):
                if len(key) != fmt.KEY_BYTES or fmt.decode_key(key) != expected:
                    problems.append(f"record {expected}: key {key.hex()} is not the local index {expected}")
                    break
                try:
                    rec = fmt.unpack_record(value)
                except fmt.FormatError as exc:
                    problems.append(f"record {expected}: {exc}")
                    break
                tags = rec["tags"]
                if not all(isinstance(t, int) for t in tags) or (
                    num_tags is not None and any(t < 0 or t >= num_tags for t in tags)
                ):
                    problems.append(f"record {expected}: tag ids {tags} out of range [0, {num_tags})")
                    break
                if not rec["image"].startswith(b"\xff\xd8"):
                    problems.append(f"record {expected}: image bytes are not a JPEG")
                    break
                if csr_ok and expected < images and list(ids[off[expected] : off[expected + 1]]) != tags:
                    problems.append(f"record {expected}: tags {tags} differ from the index")
                    break
    finally:
        env.close()
    return problems


def verify(root: str | Path) -> VerifyReport:
    """Check a dataset end to end; never raises on damage, every fault becomes a Problem."""
    root = Path(root)
    report = VerifyReport(str(root))
    try:
        manifest = fmt.read_manifest(root)
    except fmt.FormatError as exc:
        report.problems.append(Problem(None, str(exc)))
        return report
    num_tags, tag_problem = _read_tags(root)
    if tag_problem:
        report.problems.append(Problem(None, tag_problem))
    elif num_tags != manifest.get("tags", num_tags):
        report.problems.append(Problem(None, f"{fmt.TAGS} has {num_tags} tags, manifest says {manifest['tags']}"))
    shards = manifest.get("shards", [])
    held = sum(s["images"] for s in shards)
    if held != manifest.get("images"):
        report.problems.append(Problem(None, f"count mismatch: manifest says {manifest.get('images')} images, its shards hold {held}"))
    for s in shards:
        name, images = s["name"], s["images"]
        report.shards += 1

        def bad(what: str) -> None:
            report.problems.append(Problem(name, what))

        data = fmt.shard_path(root, name) / "data.mdb"
        arrays, index_problems = _check_index(root, name, images)
        for what in index_problems:
            bad(what)
        if not data.exists():
            bad(f"missing shard: {data} does not exist")
            continue
        size = data.stat().st_size
        if size != s["bytes"]:
            bad(f"truncated or resized file: data.mdb has {size} bytes, manifest says {s['bytes']}")
            continue
        digest = fmt.file_sha256(data)
        report.bytes += size
        if digest != s["sha256"]:
            bad(f"checksum mismatch (damaged bytes): sha256 {digest[:16]}..., manifest says {s['sha256'][:16]}...")
            continue
        for what in _check_records(root, name, images, arrays, num_tags):
            bad(what)
        report.images += images
    return report
