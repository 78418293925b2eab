"""Readers of the user's vocabulary lists (synonyms TSV, stoplist, keep list); strict, every fault names its line.

Entries are canonicalized exactly as tags are at conversion (tools/tags.canonical_tag), so `#Kitten`
in a list meets the raw tag `kitten`. Blank lines and lines starting with "# " (hash, space) are
comments; a hashtag written as "#cat" is an entry, not a comment.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tagstream.tools.convert.tags import canonical_tag


@dataclass(frozen=True)
class SynonymLine:
    canonical: str
    words: tuple[str, ...]  # canonical first, then its synonyms, canonicalized, without repeats
    line: int


def _lines(path: str | Path, what: str) -> list[tuple[int, str]]:
    """(line number, text) of the non-comment lines of a UTF-8 file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first entry
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} file {path}: not UTF-8 text ({exc})") from exc
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped == "#" or stripped.startswith("# "):
            continue
        out.append((number, line.rstrip("\r\n")))
    return out


def _entry(path: Path, number: int, field: str, what: str) -> str:
    field = field.strip()
    if not field:
        raise ValueError(f"{path}:{number}: empty {what} entry (two TABs in a row, or a TAB at the end?)")
    if any(ch.isspace() for ch in field):
        raise ValueError(f"{path}:{number}: {field!r} contains spaces; separate entries with TABs, one tag per field")
    tag = canonical_tag(field)
    if not tag:
        raise ValueError(f"{path}:{number}: {field!r} is empty as a canonical tag")
    return tag


def read_synonyms(path: str | Path) -> list[SynonymLine]:
    """TSV lines `canonical<TAB>synonym[<TAB>synonym...]`; a word may appear on one line only."""
    path = Path(path)
    out: list[SynonymLine] = []
    first_seen: dict[str, int] = {}
    for number, line in _lines(path, "synonyms"):
        fields = line.split("\t")
        if len(fields) == 1 and len(line.split()) > 1:
            raise ValueError(
                f"{path}:{number}: {line.strip()!r} contains spaces but no TAB; separate the tags with TABs"
            )
        if len(fields) < 2:
            raise ValueError(
                f"{path}:{number}: expected `canonical<TAB>synonym[<TAB>synonym...]`, got one field {line.strip()!r}"
            )
        words: dict[str, None] = {}  # ordered, with O(1) membership: a 200k-entry line stays linear
        for field in fields:
            tag = _entry(path, number, field, "synonyms")
            if tag in words:
                continue
            if tag in first_seen:
                raise ValueError(
                    f"{path}:{number}: {tag!r} already appears on line {first_seen[tag]}; a tag belongs to one synonym set"
                )
            first_seen[tag] = number
            words[tag] = None
        out.append(SynonymLine(next(iter(words)), tuple(words), number))
    return out


def read_taglist(path: str | Path, *, what: str = "tag list") -> set[str]:
    """One tag per line (a TSV line counts by its first field); canonicalized."""
    path = Path(path)
    return {_entry(path, number, line.split("\t")[0], what) for number, line in _lines(path, what)}


def file_digest(path: str | Path) -> str:
    """sha256 of a list file, saved with the vocabulary so a rebuild can be checked against its inputs."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
