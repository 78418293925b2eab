"""Remote keys (names listed in a bucket, read from a dataset's files) become local paths in exactly one place:
a key is data, never a path, so "..", absolute paths and anything resolving outside the cache are refused."""

from __future__ import annotations

from pathlib import Path

from tagstream.loader.data import format as fmt


def key_problem(rel: object) -> str | None:
    """What makes a remote key (relative to a dataset's URL) unfit to be a name inside the dataset, or None:
    it must be "/"-separated non-empty parts, none of them "." or "..", without a backslash or a control
    character, and not absolute. Keys come from a bucket listing: data, never paths."""
    if not isinstance(rel, str) or not rel:
        return "is empty or not a string"
    if rel.startswith("/") or "\\" in rel or any(ord(c) < 32 or ord(c) == 127 for c in rel):
        return "is absolute or holds a backslash or a control character"
    if any(part in ("", ".", "..") for part in rel.split("/")):
        return "has an empty, '.' or '..' part"
    return None


def local_file(root: Path, rel: str) -> Path:
    """The one way a remote key becomes a local path: root/rel, refused (FormatError naming the key) unless
    key_problem finds nothing and the path resolves inside root (a link inside the cache cannot lead out)."""
    problem = key_problem(rel)
    path = Path(root) / rel if problem is None else None
    if path is not None and not path.resolve().is_relative_to(Path(root).resolve()):
        problem = "resolves outside the cache directory"
    if problem is not None:
        raise fmt.FormatError(f"{root}: the remote key {rel!r} {problem}; refused (a remote name is never a path)")
    return path
