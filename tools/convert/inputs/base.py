"""What every conversion input kind provides (InputKind), its options as one typed frozen dataclass (KindOptions),
and what it yields (Item): the one variation point of conversion inputs; registry.py names the kinds.

A kind enumerates its inputs in a fixed order that is a pure function of the input, so input i always lands in
the same place and an interrupted conversion resumes at a counted position: `scan()` counts and fingerprints,
`scan_state()` hands what the scan learned to a process that converts a range of the input scanned elsewhere
(`load_scan_state` there), and `items(start)` enumerates from input `start` on, reading only what that position
needs. Inputs that cannot be used become Items with `error` set, rejected downstream with their reason.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

from tagstream.tools.convert.inputs.bounds import ITEM_LIMIT

RAW_LIMIT = 2000  # characters of an input line kept in rejects.jsonl


@dataclass(frozen=True)
class Item:
    """One input: an image (a path or URL, or its bytes when the input holds them, as a tar does) with its raw
    tags, or an unusable input (error set, rejected with `reason`)."""

    pos: int  # 0-based position in the enumeration
    line: int  # 1-based line of the metadata file (ImageFolder: pos + 1; tars and tables: sample or row in its file)
    raw: str  # the input line as read (ImageFolder: the relative path), cut to RAW_LIMIT
    image: str | None  # path or URL of the image file (tars and tables: "file:member" or "file:row", for messages)
    tags: tuple[str, ...]  # raw tags, not yet canonical
    source: str  # source id kept with the record
    error: str | None = None
    reason: str = "bad_metadata"  # why an Item with `error` is rejected (image.REJECT_REASONS)
    data: bytes | None = None  # the image bytes, when the input holds them (tars, binary Parquet columns)
    member: tuple[str, int, int] | None = None  # (local tar, offset, size) of the image: read by the worker itself
    url: str | None = None  # where a downloader fetched the image from (img2dataset's url), kept with a reject
    key: str | None = None  # the downloader's key of the sample (img2dataset's key), kept with a reject


def rejected(pos: int, line: int, raw: str, error: str, image: str | None = None) -> Item:
    """An unusable input with reason bad_metadata, its raw text cut to RAW_LIMIT."""
    return Item(pos, line, raw[:RAW_LIMIT], image, (), "", error)


def utf8_ok(text: str) -> bool:
    """Whether text can be written as UTF-8 (no lone surrogate from an escape or a surrogateescape decode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class KindOptions:
    """Base of a kind's options: every field is a str or a bool, checked at construction (`tagstream convert`
    flags carry the same names, so one name holds from the command line to the reader)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind = bool if f.type in ("bool", bool) else str
            if not isinstance(value, kind):
                raise ValueError(f"source option {f.name} must be a {kind.__name__}, got {value!r}")


class InputKind(abc.ABC):
    """One kind of conversion input. A subclass declares its name, its options class, what a local SRC of it is,
    and how auto-detection recognises it; it reads `path` (a resolved local Path, or a URL or pattern string)."""

    name: ClassVar[str]  # the --format value
    title: ClassVar[str]  # what it reads, for --help and messages
    options_type: ClassVar[type[KindOptions]]
    takes: ClassVar[str] = "file"  # a local SRC must be a "file", a "folder", or "either"
    remote: ClassVar[bool] = True  # a URL or a file pattern may name it
    suffixes: ClassVar[tuple[str, ...]] = ()  # file names --format auto takes for this kind (claims_name)
    fallback: ClassVar[bool] = False  # a folder no other kind claims is this kind's

    def __init__(self, path: Path | str, options: KindOptions):
        self.path = path
        self.options = options
        self.item_limit = ITEM_LIMIT  # an image larger is rejected from its header, unread (Source sets it)

    @classmethod
    def claims_name(cls, name: str) -> bool:
        """Whether --format auto reads a file, URL or pattern of this name as this kind (asked in registry order)."""
        return bool(cls.suffixes) and name.lower().rstrip("/").endswith(cls.suffixes)

    @classmethod
    def claims_folder(cls, folder: Path) -> bool:
        """Whether --format auto reads the local folder as this kind (asked in registry order)."""
        return cls.fallback

    def describe(self) -> dict:
        """What the kind reads besides its path (columns, fields), recorded with the conversion: a rerun must match."""
        return {}

    @abc.abstractmethod
    def scan(self) -> tuple[int, str]:
        """(number of inputs, a sha256 hex digest of what they are) — one pass, no image decoded."""

    def scan_state(self, store: Path | None = None) -> dict | None:
        """What scan() learned that items(start) needs, as JSON (None: nothing); `store`, a folder every part can
        read (OUT/.convert/), holds what is too big for JSON."""
        return None

    def load_scan_state(self, state: dict, store: Path | None = None) -> None:
        """Take a scan_state() from a scan run elsewhere instead of scanning again."""

    @abc.abstractmethod
    def items(self, start: int = 0) -> Iterator[Item]:
        """Items from input position `start` on, positions as scan() counts them."""
