"""Input files of a source: one file, a directory, a glob or a brace pattern (`shards/{00000..00123}.tar`),
local or an fsspec URL (s3://, gs://, https://, file://), expanded to a fixed, sorted list; a file's size and
stamp for fingerprints.

Brace patterns keep their written order (numeric ranges ascend) and may name files that do not exist:
the caller turns each missing one into a rejected input instead of refusing the whole source, as a
sharded download that lost one shard is still worth converting. Globs and directories list what exists.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from pathlib import Path

from tagstream.loader.data import storage

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
GLOB_CHARS = ("*", "?", "[")
MAX_EXPANSION = 10_000_000  # brace patterns that would name more files are refused (a typo, not a dataset)


def braceexpand(pattern: str) -> list[str]:
    """`a{0..2}b{x,y}` -> a0bx a0by a1bx ...; numeric ranges keep the zero padding of their first bound."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body = m.group(1)
    rng = _RANGE.match(body)
    if rng:
        lo, hi = int(rng.group(1)), int(rng.group(2))
        width = len(rng.group(1)) if rng.group(1).lstrip("-").startswith("0") else 0
        step = 1 if hi >= lo else -1
        if abs(hi - lo) + 1 > MAX_EXPANSION:
            raise ValueError(f"brace range {{{body}}} names {abs(hi - lo) + 1} files (more than {MAX_EXPANSION})")
        choices = [str(i).zfill(width) for i in range(lo, hi + step, step)]
    else:
        choices = body.split(",")
    head, tail = pattern[: m.start()], pattern[m.end() :]
    rests = braceexpand(tail)
    if len(choices) * len(rests) > MAX_EXPANSION:
        raise ValueError(f"brace pattern {pattern!r} names more than {MAX_EXPANSION} files")
    return [head + c + rest for c in choices for rest in rests]


def is_pattern(spec: str) -> bool:
    return "{" in spec or any(c in spec for c in GLOB_CHARS)


def _has_glob(spec: str) -> bool:
    return any(c in spec for c in GLOB_CHARS)


def _local(spec: str) -> str:
    path = storage.local_path(spec)
    return str(path.resolve()) if path is not None else spec


def _glob(spec: str) -> list[str]:
    if storage.local_path(spec) is not None:
        return sorted(
            str(Path(p).resolve())
            for p in glob.glob(str(storage.local_path(spec)), recursive=True)
            if os.path.isfile(p)
        )
    fs, path = storage.filesystem(spec)
    found = storage.retrying(spec, lambda: fs.glob(path), storage.DEFAULT_RETRY)
    return sorted(fs.unstrip_protocol(p) for p in found if not p.endswith("/"))


def _isdir(spec: str) -> bool:
    local = storage.local_path(spec)
    if local is not None:
        return local.is_dir()
    fs, path = storage.filesystem(spec)
    return bool(storage.retrying(spec, lambda: fs.isdir(path), storage.DEFAULT_RETRY))


def expand(spec: str | os.PathLike, suffixes: tuple[str, ...]) -> list[str]:
    """The input files SPEC names, in conversion order; ValueError when a glob or directory names none.

    A directory contributes the files under it (recursively) whose names end with one of `suffixes`."""
    spec = str(spec)
    if "{" in spec:
        files = [_local(p) for p in braceexpand(spec)]
        if not any(file_size(f) is not None for f in files):  # stops at the first that exists
            raise ValueError(f"no file named by {storage.redact(spec)} exists ({len(files)} names): nothing to convert")
        return files
    if _has_glob(spec):
        files = _glob(spec)
        if not files:
            raise ValueError(f"no file matches {storage.redact(spec)}")
        return files
    if _isdir(spec):
        base = _local(spec)
        files = [
            storage.join(base, rel)
            for rel in storage.list_files(base)
            if rel.lower().endswith(suffixes) and not any(part.startswith(".") for part in rel.split("/"))
        ]
        if not files:
            raise ValueError(f"{storage.redact(spec)} is a directory with no {'/'.join(suffixes)} file under it")
        return files
    return [_local(spec)]


def file_size(path: str) -> int | None:
    """Size in bytes, or None when there is no such file (or object)."""
    local = storage.local_path(path)
    if local is not None:
        try:
            return local.stat().st_size if local.is_file() else None
        except OSError:
            return None
    try:
        return storage.size(path)
    except FileNotFoundError:
        return None


def display_name(path: str, files: list[str]) -> str:
    """A file's name as shown in rejects: relative to the files' common folder (the whole URL when remote)."""
    if len(files) > 1:
        common = os.path.commonpath([f.split("://", 1)[-1] for f in files])
        tail = path.split("://", 1)[-1]
        if common and tail.startswith(common + "/"):
            return tail[len(common) + 1 :]
    return path.rsplit("/", 1)[-1]


def hash_file(path: str) -> str:
    """sha256 of an object's bytes, read once in blocks (metadata files: JSON lines, YFCC's table)."""
    h = hashlib.sha256()
    with storage.open_read(path) as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def stamp(path: str) -> bytes:
    """Size and modification time of a local file for a fingerprint (b"-" for a URL: not fetched to
    fingerprint; b"missing" when it cannot be read: rejected later, fingerprinted as such)."""
    if storage.is_url(path):
        return b"-"
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return b"missing"
    return f"{st.st_size}:{st.st_mtime_ns}".encode()
