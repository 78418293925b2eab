"""Conversion inputs, enumerated in a fixed order as Items: ImageFolder trees, JSON-lines and CSV/TSV files
(here), WebDataset/img2dataset tars (source_tar.py), Parquet tables (source_parquet.py) and YFCC100M's
metadata table (source_yfcc.py); every file may be local or an fsspec URL (source_paths.py).

The order is a pure function of the input (ImageFolder: sorted paths; files: line order; tars and tables:
file order, then member or row order), so input i always lands in the same place and an interrupted
conversion resumes at a counted position: `items(start)` enumerates from input `start` on, reading only
what that position needs (the tar or row group holding it; for JSON lines and CSV, from the scan's nearest
mark; source_csv.py reads CSV rows with their byte offsets).
Inputs that cannot be used become Items with `error` set, rejected downstream with their reason.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib
import itertools
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

from tagstream.loader.data import storage
from tagstream.tools.convert.source_csv import csv_header, csv_rows
from tagstream.tools.convert.source_paths import (  # noqa: F401 - detect_format and the suffixes are used from here
    CSV_SUFFIXES,
    FORMATS,
    JSONL_SUFFIXES,
    PARQUET_SUFFIXES,
    TAR_SUFFIXES,
    detect_format,
    is_pattern,
)
from tagstream.tools.convert.tags import caption_hashtags, split_tag_cell

# format name -> "module:class" of its reader (None: read by Source itself)
READERS = {
    "imagefolder": None,
    "jsonl": None,
    "csv": None,
    "tar": "tagstream.tools.convert.source_tar:TarSource",
    "parquet": "tagstream.tools.convert.source_parquet:ParquetSource",
    "yfcc": "tagstream.tools.convert.source_yfcc:YfccSource",
}
RAW_LIMIT = 2000  # characters of an input line kept in rejects.jsonl
JSONL_MARK_EVERY = 1 << 18  # a JSON-lines scan notes where every 262,144th input starts (~13,000 marks at 3.5e9 lines)


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


# The fingerprint's scheme, written before its digest: "2:" covers each image's size and modification time (an
# image changed between a crash and the rerun is caught); a bare digest was written by tagstream before that.
FINGERPRINT_SCHEME = "2:"


@dataclass(frozen=True)
class SourceOptions:
    """Where each source kind finds images, tags, captions and ids (`tagstream convert` options)."""

    image_column: str = "image"  # CSV/TSV/Parquet: image path, URL, or (Parquet) the image bytes
    tags_column: str = "tags"  # CSV/TSV/Parquet: tags (a list column, or a string of tags)
    caption_column: str = "caption"  # CSV/TSV/Parquet: free text whose #hashtags are tags
    id_column: str = "id"  # CSV/TSV/Parquet: source id
    tags_field: str = "tags"  # tars: the JSON member's field with tags (a list, or a comma/space separated string)
    caption_field: str = "caption"  # tars: JSON field with a caption, when the sample has no .txt member
    id_field: str = ""  # tars: JSON field with the source id ('' = the sample key); YFCC tars: the photo id
    status_field: str = "status"  # tars/Parquet: img2dataset's download status; anything but "success" is rejected
    images: str = ""  # YFCC: a directory of images named by photo id, or img2dataset tars (file, dir, glob, braces)
    yfcc_machine_tags: bool = False  # YFCC: the machine tags too, not only the user tags

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind = bool if f.type in ("bool", bool) else str
            if not isinstance(value, kind):
                raise ValueError(f"source option {f.name} must be a {kind.__name__}, got {value!r}")

    @classmethod
    def of(cls, **options) -> SourceOptions:
        """From keyword options; an unknown one is refused with the allowed set."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown source option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        return cls(**options)


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _stamp(path: str) -> bytes:
    """Size and modification time of a local file for a fingerprint (b"-" for a URL: not fetched to
    fingerprint; b"missing" when it cannot be read: rejected later, fingerprinted as such)."""
    if storage.is_url(path):
        return b"-"
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return b"missing"
    return f"{st.st_size}:{st.st_mtime_ns}".encode()


def _bad(pos: int, line: int, raw: str, error: str, image: str | None = None) -> Item:
    return Item(pos, line, raw[:RAW_LIMIT], image, (), "", error)


def mark_before(marks: list[tuple[int, int, int]] | None, start: int) -> tuple[int, int, int] | None:
    """The last of a scan's marks (position, byte offset, lines before it) at or before position `start`; None
    when there is none to use (read from the top)."""
    if not start or not marks:
        return None
    return marks[bisect.bisect_right(marks, (start, math.inf, 0)) - 1]


def numbered_lines(
    f, start: int = 0, mark: tuple[int, int, int] | None = None, marks: list | None = None, every: int = 0
) -> Iterator[tuple[int, int, bytes]]:
    """(position, line number, line) of each non-blank line of the binary file `f` from position `start` on
    (blank lines take no position), begun at `mark` (None: the top); a line before `start` is only tested for
    being blank. `marks` collects a mark every `every` positions (a scan's)."""
    pos, offset, lineno = mark or (0, 0, 0)
    if offset:
        f.seek(offset)
    for data in f:
        lineno += 1
        if data.strip():
            if marks is not None and pos % every == 0:
                marks.append((pos, offset, lineno - 1))
            if pos >= start:
                yield pos, lineno, data
            pos += 1
        offset += len(data)


class Source:
    """An input collection: `scan()` counts and fingerprints it, `items(start)` enumerates it from input `start`.

    Keyword options are SourceOptions fields (image_column=..., tags_field=..., images=...)."""

    def __init__(self, path: str | Path, fmt: str = "auto", **options):
        self.options = SourceOptions.of(**options)
        self.format = detect_format(path, fmt)
        spec = str(path)
        local = storage.local_path(spec)
        # a local, plain path resolved (a rerun from another directory is the same source); URLs and patterns as given
        self.path: Path | str = local.resolve() if local is not None and not is_pattern(spec) else spec
        if local is not None and is_pattern(spec):
            self.path = os.path.abspath(local)
        o = self.options
        self.columns = {"image": o.image_column, "tags": o.tags_column, "caption": o.caption_column, "id": o.id_column}
        self._files: list[str] | None = None
        # JSON lines and CSV: the scan's marks, (position, byte offset, lines before)
        self._marks: list[tuple[int, int, int]] | None = None
        reader = READERS[self.format]
        self._reader = None
        if reader is not None:
            module, name = reader.split(":")
            self._reader = getattr(importlib.import_module(module), name)(str(self.path), self.options)
        elif not isinstance(self.path, Path) and self.format == "imagefolder":
            raise ValueError(f"an ImageFolder must be a local directory, got {storage.redact(str(self.path))}")

    def describe(self) -> dict:
        if self._reader is not None:
            return {"format": self.format, "path": str(self.path), **self._reader.describe()}
        desc: dict = {"format": self.format, "path": str(self.path)}
        if self.format == "csv":
            desc["columns"] = self.columns
        return desc

    def scan(self) -> tuple[int, str]:
        """(number of items, fingerprint of the input: FINGERPRINT_SCHEME + a sha256) — one pass, no image is decoded."""
        count, digest = self._reader.scan() if self._reader is not None else self._scan()
        return count, FINGERPRINT_SCHEME + digest

    def scan_state(self, store: Path | None = None) -> dict | None:
        """What scan() learned that items(start) needs (tars: samples per tar; tables: rows per row group; JSON
        lines and CSV: marks, byte offsets), as JSON, for a process that converts a range of an input scanned
        elsewhere (a part on another machine): `load_scan_state` there skips the scan. `store`, a folder every
        part can read (OUT/.convert/), holds what is too big for JSON (YFCC's join index). None for kinds that
        need none."""
        if self._reader is None:
            return {f"{self.format}_marks": self._marks} if self._marks is not None else None
        return self._reader.scan_state(store) if hasattr(self._reader, "scan_state") else None

    def load_scan_state(self, state: dict | None, store: Path | None = None) -> None:
        if state is not None and self._reader is None:
            self._marks = [tuple(int(v) for v in mark) for mark in state.get(f"{self.format}_marks", [])]
        elif state is not None:
            self._reader.load_scan_state(state, store)

    def items(self, start: int = 0) -> Iterator[Item]:
        """Items from input position `start` on (positions as counted by scan(), which must run first for
        tars, tables and YFCC: their readers locate `start` from the per-file counts the scan found)."""
        if self._reader is not None:
            yield from self._reader.items(start)
        elif self.format == "imagefolder":
            yield from itertools.islice(self._imagefolder_items(), start, None)
        elif self.format == "jsonl":
            yield from self._jsonl_items(start)
        else:
            yield from self._csv_items(start)

    def _mark_before(self, start: int) -> tuple[int, int, int] | None:
        return mark_before(self._marks, start)

    def _open(self):
        return open(self.path, "rb") if isinstance(self.path, Path) else storage.open_read(self.path)

    def _image_path(self, image: str) -> str:
        """A path or URL in a metadata file, relative to that file's folder unless it is a URL or absolute."""
        if storage.is_url(image):
            return image
        if isinstance(self.path, Path):
            return str(self.path.parent / image)
        return image if image.startswith("/") else storage.join(self.path.rsplit("/", 1)[0], image)

    # ---- ImageFolder ----
    def _listing(self) -> list[str]:
        """Sorted relative paths of the files under SRC, and of the symbolic links to folders (os.walk does
        not descend into them; they are listed so that each becomes a rejected input, not a silent gap)."""
        if self._files is None:
            files = []
            for dirpath, dirnames, filenames in os.walk(self.path):
                rel = os.path.relpath(dirpath, self.path)
                linked = [d for d in dirnames if not d.startswith(".") and os.path.islink(os.path.join(dirpath, d))]
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in linked)
                for name in sorted(filenames + linked):
                    if not name.startswith("."):
                        files.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
            self._files = sorted(files)
        return self._files

    def _link_problem(self, rel: str) -> str | None:
        """Why a symbolic link under an ImageFolder is not followed, or None for anything else: a link to a
        folder (not descended: loops, and a second name for the same images), or to a file outside SRC."""
        path = self.path / rel
        if not path.is_symlink():
            return None
        target = os.path.realpath(path)
        if os.path.isdir(target):
            return f"symbolic link to a folder ({target}): not followed; give the folder itself as SRC or copy it in"
        if not Path(target).is_relative_to(os.path.realpath(self.path)):
            return f"symbolic link to a file outside SRC ({target}): not followed"
        return None

    def _scan(self) -> tuple[int, str]:
        h = hashlib.sha256()
        if self.format == "imagefolder":
            files = self._listing()
            for rel in files:
                h.update(os.fsencode(rel) + b"\0" + _stamp(str(self.path / rel)) + b"\n")
            return len(files), h.hexdigest()
        with self._open() as f:
            while block := f.read(1 << 22):
                h.update(block)
        if self.format == "csv":
            self._check_header()
        count = 0
        # the images too (size and modification time of each local file): an image changed between an
        # interrupted run and its rerun must not leave a dataset of old and new bytes that verifies
        marks: list[tuple[int, int, int]] = []
        for item in self._jsonl_items(marks=marks) if self.format == "jsonl" else self._csv_items(marks=marks):
            if item.image is not None and item.error is None:
                h.update(os.fsencode(item.image) + b"\0" + _stamp(item.image) + b"\n")
            count += 1
        self._marks = marks
        return count, h.hexdigest()

    def _imagefolder_items(self) -> Iterator[Item]:
        for pos, rel in enumerate(self._listing()):
            link = self._link_problem(rel)
            if link is not None:
                yield Item(
                    pos, pos + 1, rel.encode("utf-8", "replace").decode()[:RAW_LIMIT], None, (), "", link, "symlink"
                )
            elif not _utf8_ok(rel):
                yield _bad(pos, pos + 1, rel.encode("utf-8", "replace").decode(), "path is not valid UTF-8")
            elif "/" not in rel:
                yield _bad(pos, pos + 1, rel, "file is not inside a class folder (SRC/<class>/<image>)")
            else:
                yield Item(pos, pos + 1, rel, str(self.path / rel), (rel.split("/", 1)[0],), rel)

    def _jsonl_items(self, start: int = 0, marks: list | None = None) -> Iterator[Item]:
        """Items from position `start` on. A line before `start` is only tested for being blank (not parsed),
        and the scan's marks (every JSONL_MARK_EVERY positions: byte offset and line number; `marks` collects
        them) let a part seek close to its start instead of reading the file from its top."""
        with self._open() as f:
            for pos, lineno, data in numbered_lines(f, start, self._mark_before(start), marks, JSONL_MARK_EVERY):
                yield self._jsonl_item(pos, lineno, data)

    def _jsonl_item(self, pos: int, lineno: int, data: bytes) -> Item:
        if lineno == 1 and data.startswith(b"\xef\xbb\xbf"):  # a byte-order mark is not part of the JSON
            data = data[3:]
        try:
            text = data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            return _bad(pos, lineno, data.decode("utf-8", "replace").rstrip("\r\n"), "line is not valid UTF-8")
        try:
            obj = json.loads(text)
        except ValueError as exc:
            return _bad(pos, lineno, text, f"line is not JSON: {exc}")
        if not isinstance(obj, dict):
            return _bad(pos, lineno, text, f"line is a JSON {type(obj).__name__}, expected an object")
        image = obj.get("image")
        if not isinstance(image, str) or not image:
            return _bad(pos, lineno, text, "no 'image' path (a non-empty string) on the line")
        tags = obj.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return _bad(pos, lineno, text, "'tags' must be a list of strings", image)
        caption = obj.get("caption", "")
        if not isinstance(caption, str):
            return _bad(pos, lineno, text, "'caption' must be a string", image)
        sid = obj.get("id", image)
        if not isinstance(sid, (str, int)) or isinstance(sid, bool):
            return _bad(pos, lineno, text, "'id' must be a string or an integer", image)
        if not all(_utf8_ok(s) for s in (image, caption, str(sid), *tags)):  # JSON can escape lone surrogates
            return _bad(pos, lineno, text, "line holds text that is not valid Unicode (a lone surrogate)")
        raw_tags = tuple(tags) + tuple(caption_hashtags(caption))
        return Item(pos, lineno, text[:RAW_LIMIT], self._image_path(image), raw_tags, str(sid))

    # ---- CSV / TSV ----
    @property
    def _delimiter(self) -> str:
        return "\t" if str(self.path).lower().endswith(".tsv") else ","

    def _check_header(self) -> list[str]:
        with self._open() as f:
            header = csv_header(f, self._delimiter)
        if self.columns["image"] not in header:
            raise ValueError(
                f"{self.path}: the header has no image column {self.columns['image']!r} "
                f"(columns: {', '.join(header) or 'none'}); choose one with --image-column"
            )
        return header

    def _csv_items(self, start: int = 0, marks: list | None = None) -> Iterator[Item]:
        """Items from position `start` on, read from the scan's nearest mark before it; `marks` collects the
        scan's marks (source_csv.csv_rows)."""
        header = self._check_header()
        col = {name: i for i, name in enumerate(header)}
        with self._open() as f:
            for pos, lineno, row, problem in csv_rows(f, self._delimiter, start, self._mark_before(start), marks):
                if row is None:
                    yield _bad(pos, lineno, "", f"CSV parser refused the row: {problem}")
                    continue
                raw = self._delimiter.join(row)
                if not all(_utf8_ok(cell) for cell in row):
                    yield _bad(pos, lineno, raw.encode("utf-8", "replace").decode(), "row is not valid UTF-8")
                    continue
                if len(row) != len(header):
                    yield _bad(pos, lineno, raw, f"row has {len(row)} fields, the header has {len(header)}")
                    continue
                values = {name: (row[col[c]] if c in col else "") for name, c in self.columns.items()}
                image = values["image"].strip()
                if not image:
                    yield _bad(pos, lineno, raw, f"empty image column {self.columns['image']!r}")
                    continue
                raw_tags = tuple(split_tag_cell(values["tags"])) + tuple(caption_hashtags(values["caption"]))
                sid = values["id"].strip() or image
                yield Item(pos, lineno, raw[:RAW_LIMIT], self._image_path(image), raw_tags, sid)
