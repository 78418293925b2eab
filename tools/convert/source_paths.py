"""Input files of a source: one file, a directory, a glob or a brace pattern (`shards/{00000..00123}.tar`),
local or an fsspec URL (s3://, gs://, https://, file://), expanded to a fixed, sorted list; and the kind of
a source told from its name (`detect_format`).

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

FORMATS = ("auto", "imagefolder", "jsonl", "csv", "tar", "parquet", "yfcc")  # readers: sources.READERS
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv", ".tsv")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")  # compressed tars are streamed; only plain ones are seekable on resume
PARQUET_SUFFIXES = (".parquet",)
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
        return [_local(p) for p in braceexpand(spec)]
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


def _suffix_format(name: str) -> str | None:
    lower = name.lower().rstrip("/")
    for suffixes, kind in (
        (TAR_SUFFIXES, "tar"),
        (PARQUET_SUFFIXES, "parquet"),
        (JSONL_SUFFIXES, "jsonl"),
        (CSV_SUFFIXES, "csv"),
    ):
        if lower.endswith(suffixes):
            return kind
    return None


def _folder_format(path: Path) -> str:
    """A local directory: tars or Parquet files at its top level make it that kind, else an ImageFolder."""
    names = [p.name.lower() for p in path.iterdir() if p.is_file()]
    for suffixes, kind in ((TAR_SUFFIXES, "tar"), (PARQUET_SUFFIXES, "parquet")):
        if any(n.endswith(suffixes) for n in names):
            return kind
    return "imagefolder"


def detect_format(src: str | Path, fmt: str = "auto") -> str:
    """Resolve --format auto from what SRC is; ValueError names the bad value and the allowed set."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown input format {fmt!r}; allowed: {', '.join(FORMATS)}")
    spec = str(src)
    local = storage.local_path(spec)
    if local is None or is_pattern(spec):  # a URL or a pattern: its files are listed by the reader
        if fmt in ("imagefolder",) or (fmt == "auto" and _suffix_format(spec) is None):
            raise ValueError(
                f"{storage.redact(spec)}: a URL or a pattern needs --format tar, parquet, jsonl, csv "
                f"or yfcc (auto knows names ending in .tar, .parquet, .jsonl, .csv, .tsv)"
            )
        return fmt if fmt != "auto" else _suffix_format(spec)
    src = local
    if not src.exists():
        raise ValueError(f"source {src} does not exist")
    if not src.is_dir() and not src.is_file():  # a FIFO would hang the scan (which reads it) and cannot be read twice
        raise ValueError(
            f"source {src} is not a regular file or a directory (a FIFO, socket or device); copy it to a file"
        )
    if fmt in ("imagefolder", "jsonl", "csv", "yfcc"):
        if (fmt == "imagefolder") != src.is_dir():
            raise ValueError(f"--format {fmt} needs a {'directory' if fmt == 'imagefolder' else 'file'}, got {src}")
        return fmt
    if fmt != "auto":
        return fmt
    if src.is_dir():
        return _folder_format(src)
    kind = _suffix_format(src.name)
    if kind is None:
        raise ValueError(
            f"cannot tell the format of {src} from its name (suffix {src.suffix.lower()!r}); use --format "
            f"{'|'.join(FORMATS[1:])} (auto knows directories, "
            f"{'/'.join(TAR_SUFFIXES + PARQUET_SUFFIXES + JSONL_SUFFIXES + CSV_SUFFIXES)})"
        )
    return kind
