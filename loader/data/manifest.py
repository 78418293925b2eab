"""The manifest, read and checked: the structure of manifest.json (format name and version, the shard list with
counts, sizes and checksums; in version 2 the index arrays' and the tag and reject tables' checksums), refused in one
line naming what is wrong; and the tool version every manifest records."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tagstream.loader.data.format import (
    FORMAT_NAME,
    INDEX_ARRAYS,
    MANIFEST,
    OPTIONAL_INDEX_ARRAYS,
    READABLE_VERSIONS,
    REJECTS,
    TAGS,
    FormatError,
    check_name,
)


def read_manifest(root: Path) -> dict[str, Any]:
    """Read and check manifest.json: refuses another format, an unknown version and a malformed structure
    (every fault a FormatError naming the file), so no reader meets a bad value later."""
    path = Path(root) / MANIFEST
    if not path.exists():
        raise FormatError(f"{root}: no {MANIFEST} (not a tagstream dataset, or its conversion has not finished)")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, OSError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FormatError(f"{path}: not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(manifest, dict):
        raise FormatError(f"{path}: expected a JSON object, got a JSON {type(manifest).__name__}")
    if manifest.get("format") != FORMAT_NAME:
        raise FormatError(f"{path}: format is {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
    version = manifest.get("version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise FormatError(
            f"{path}: format version {version!r} is not known to this tagstream "
            f"(it reads versions {', '.join(map(str, READABLE_VERSIONS))}); upgrade tagstream or re-convert the dataset"
        )
    _check_manifest_shards(path, manifest)
    _check_manifest_files(path, manifest)
    return manifest


def _count(value: object) -> bool:
    """A count or a byte size: a whole number that fits an int64 (a larger one overflowed NumPy later)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63


def _check_manifest_shards(path: Path, manifest: dict) -> None:
    if not _count(manifest.get("images")):
        raise FormatError(
            f"{path}: 'images' must be a non-negative integer below 2**63, got {manifest.get('images')!r:.80}"
        )
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        raise FormatError(f"{path}: 'shards' must be a list of shard entries, got {shards!r:.80}")
    seen: set[str] = set()
    for k, entry in enumerate(shards):
        if not isinstance(entry, dict):
            raise FormatError(f"{path}: shard entry {k} must be an object, got {entry!r:.80}")
        name = entry.get("name")
        try:
            check_name(name, "shard")
        except ValueError as exc:
            raise FormatError(f"{path}: shard entry {k}: {exc}") from None
        if name in seen:
            raise FormatError(f"{path}: shard {name!r} is listed twice")
        seen.add(name)
        for key in ("images", "bytes"):
            if (key in entry or key == "images") and not _count(entry.get(key)):
                raise FormatError(
                    f"{path}: shard {name}: {key!r} must be a non-negative integer below 2**63, got {entry.get(key)!r:.80}"
                )
        digest = entry.get("sha256")
        if "sha256" in entry and not (isinstance(digest, str) and re.fullmatch(r"([0-9a-f]{64})?", digest)):
            raise FormatError(f"{path}: shard {name}: 'sha256' must be 64 hex digits (or empty), got {digest!r:.80}")
        index = entry.get("index", {})
        if not isinstance(index, dict) or not all(
            (k in INDEX_ARRAYS or k in OPTIONAL_INDEX_ARRAYS)
            and isinstance(v, str)
            and re.fullmatch(r"[0-9a-f]{64}", v)
            for k, v in index.items()
        ):
            raise FormatError(f"{path}: shard {name}: 'index' must map index array names to 64 hex digits")


MANIFEST_FILES = (TAGS, REJECTS)  # the files besides shards and index that a version-2 manifest covers


def _check_manifest_files(path: Path, manifest: dict) -> None:
    files = manifest.get("files", {})
    ok = isinstance(files, dict) and all(
        k in MANIFEST_FILES
        and isinstance(v, dict)
        and _count(v.get("bytes"))
        and isinstance(v.get("sha256"), str)
        and re.fullmatch(r"[0-9a-f]{64}", v["sha256"])
        for k, v in files.items()
    )
    if not ok:
        raise FormatError(f"{path}: 'files' must map {' or '.join(MANIFEST_FILES)} to {{'bytes', 'sha256'}}")


def tool_version() -> str:
    """The installed tagstream's version (its one definition is pyproject.toml's), recorded in every manifest."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tagstream")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"
