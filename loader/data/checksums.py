"""Checksums of everything a run trusts besides the shards: where each is recorded, and the one check.

    manifest.json (format version 2)   each shard entry's "index": {array: sha256 of index/NNNNN.ARRAY.npy};
                                       "files": {"tags.tsv" | "rejects.jsonl": {"bytes", "sha256"}}
    vocab/NAME/checksums.json          {"files": {file: {"bytes", "sha256"}}} of the vocabulary's other files,
                                       written before its vocab.json (the vocabulary's commit point)
    masks/NAME.json                    {"bytes", "sha256"} of masks/NAME.npy, written before the mask is renamed
                                       into place

A vocabulary or mask is built after conversion, so it cannot be in the manifest: its own checksum file beside
it is its record. A version-1 manifest, a vocabulary or a mask of an older tagstream have no such records:
they still read, unchecked, and `tagstream verify` says so. Checked where shards are checked: as a URL's files
download (loader/data/cache.py), before a local run trusts them with data.verify_shards (`check_once`: once per
machine and file version, a stamp under ~/.cache/tagstream/verified), and by `tagstream verify`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
from pathlib import Path

from tagstream.loader.data import format as fmt

VOCAB_SUMS = "checksums.json"  # in vocab/NAME/
_HEX = re.compile(r"[0-9a-f]{64}")


def entry_of(data: bytes) -> dict:
    """{"bytes", "sha256"} of some bytes."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def entry_of_file(path: Path) -> dict:
    """{"bytes", "sha256"} of a file."""
    return {"bytes": Path(path).stat().st_size, "sha256": fmt.file_sha256(Path(path))}


def is_entry(value: object) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("bytes"), int)
        and value["bytes"] >= 0
        and isinstance(value.get("sha256"), str)
        and bool(_HEX.fullmatch(value["sha256"]))
    )


# ---------------------------------------------------------------- where they are recorded


def manifest_files(manifest: dict) -> dict[str, dict]:
    """Dataset-relative path -> {"sha256"[, "bytes"]} of every file the manifest covers besides the shards'
    data.mdb (the index arrays, tags.tsv, rejects.jsonl); {} for a version-1 manifest."""
    out: dict[str, dict] = {}
    for s in manifest.get("shards", []):
        for array, digest in (s.get("index") or {}).items():
            out[fmt.index_path(Path(), s["name"], array).as_posix()] = {"sha256": digest}
    out.update(manifest.get("files") or {})
    return out


def mask_sums_path(mask: Path) -> Path:
    """masks/NAME.json beside masks/NAME.npy."""
    return Path(mask).with_suffix(".json")


def read_sums(path: Path) -> dict | None:
    """A vocabulary's checksums.json as {file: entry}, or a mask's NAME.json as one entry; None when there is none
    (built by an older tagstream). FormatError when it is there but malformed."""
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise fmt.FormatError(f"{path}: unreadable checksum file ({type(exc).__name__}: {exc})") from None
    if path.name == VOCAB_SUMS:
        files = data.get("files") if isinstance(data, dict) else None
        if isinstance(files, dict) and all(
            isinstance(k, str) and fmt.NAME_PATTERN.fullmatch(k) and is_entry(v) for k, v in files.items()
        ):
            return files
    elif is_entry(data):
        return {"bytes": data["bytes"], "sha256": data["sha256"]}
    raise fmt.FormatError(f"{path}: not a tagstream checksum file")


def write_vocab_sums(folder: Path, files: dict[str, dict]) -> None:
    """vocab/NAME/checksums.json, atomically."""
    fmt.write_json_atomic(Path(folder) / VOCAB_SUMS, {"algorithm": "sha256", "files": files})


def write_mask_sums(mask: Path, entry: dict) -> None:
    """masks/NAME.json, atomically."""
    fmt.write_json_atomic(mask_sums_path(mask), {**entry, "algorithm": "sha256"})


# ---------------------------------------------------------------- checking


def mismatch(path: Path, expected: dict, what: str, record: str = "its recorded") -> str | None:
    """Why the file at path is not the recorded one (missing, another size, another sha256), or None;
    `record` names the record in the message ("the manifest's")."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        return f"{what} is missing ({path})"
    if "bytes" in expected and size != expected["bytes"]:
        return f"{what} has {size} bytes, {record} size is {expected['bytes']} (edited or damaged since written)"
    if fmt.file_sha256(Path(path)) != expected["sha256"]:
        return f"{what} does not match {record} sha256 (its content changed since it was written: damaged or edited)"
    return None


def check_once(
    path: Path, expected: dict, what: str, record: str = "its recorded", *, cache_dir: str | Path | None = None
) -> None:
    """FormatError naming `what` unless the file matches its record; hashed once per machine and file version:
    a stamp (under cache_dir/verified/, by default ~/.cache/tagstream/verified/: format.stamp_dir; keyed by the file's real path, size and modification time) lets every
    later process skip it, and a lock makes processes that check it at once hash it once. A file that fails is
    never stamped."""
    path = Path(path).resolve()
    try:
        st = path.stat()
    except OSError:
        raise fmt.FormatError(f"{what} is missing ({path})") from None
    want = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": expected["sha256"]}
    folder = fmt.stamp_dir(cache_dir)
    stamp = folder / (hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:32] + ".json")

    def stamped() -> bool:
        try:
            return json.loads(stamp.read_text()) == want
        except (OSError, ValueError):
            return False

    if stamped():
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(stamp.with_suffix(".lock"), "a+")
    except OSError:  # no writable cache: hash it here, every time
        lock = None
    try:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if stamped():
                return
        problem = mismatch(path, expected, what, record)
        if problem is not None:
            raise fmt.FormatError(f"{path}: {problem}; run `tagstream verify` on the dataset")
        try:
            fmt.write_text_atomic(stamp, json.dumps(want))
        except OSError:
            pass
    finally:
        if lock is not None:
            lock.close()
