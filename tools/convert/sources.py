"""Conversion inputs: ImageFolder trees, JSON-lines and CSV/TSV files, enumerated in a fixed order as Items.

The order is a pure function of the input (ImageFolder: sorted paths; files: line order), so input i
always lands in the same place and an interrupted conversion resumes by skipping a counted prefix.
Metadata lines that cannot be used become Items with `error` set, rejected downstream with a reason.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tagstream.tools.convert.tags import caption_hashtags, split_tag_cell

FORMATS = ("auto", "imagefolder", "jsonl", "csv")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv", ".tsv")
RAW_LIMIT = 2000  # characters of an input line kept in rejects.jsonl


@dataclass(frozen=True)
class Item:
    """One input: an image path with its raw tags, or an unusable metadata line (error set)."""

    pos: int  # 0-based position in the enumeration
    line: int  # 1-based line of the metadata file (ImageFolder: pos + 1)
    raw: str  # the input line as read (ImageFolder: the relative path), cut to RAW_LIMIT
    image: str | None  # path of the image file
    tags: tuple[str, ...]  # raw tags, not yet canonical
    source: str  # source id kept with the record
    error: str | None = None


def detect_format(src: Path, fmt: str = "auto") -> str:
    """Resolve --format auto from what SRC is; ValueError names the bad value and the allowed set."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown input format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if not src.exists():
        raise ValueError(f"source {src} does not exist")
    if fmt != "auto":
        if (fmt == "imagefolder") != src.is_dir():
            raise ValueError(f"--format {fmt} needs a {'directory' if fmt == 'imagefolder' else 'file'}, got {src}")
        return fmt
    if src.is_dir():
        return "imagefolder"
    suffix = src.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in CSV_SUFFIXES:
        return "csv"
    raise ValueError(
        f"cannot tell the format of {src} from its name (suffix {suffix!r}); use --format "
        f"imagefolder|jsonl|csv (auto knows directories, {'/'.join(JSONL_SUFFIXES + CSV_SUFFIXES)})"
    )


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad(pos: int, line: int, raw: str, error: str, image: str | None = None) -> Item:
    return Item(pos, line, raw[:RAW_LIMIT], image, (), "", error)


class Source:
    """An input collection: `scan()` counts and fingerprints it, `items()` enumerates it."""

    def __init__(self, path: str | Path, fmt: str = "auto", *, image_column: str = "image",
                 tags_column: str = "tags", caption_column: str = "caption", id_column: str = "id"):
        self.path = Path(path).resolve()
        self.format = detect_format(self.path, fmt)
        self.columns = {"image": image_column, "tags": tags_column, "caption": caption_column, "id": id_column}
        self._files: list[str] | None = None

    def describe(self) -> dict:
        desc: dict = {"format": self.format, "path": str(self.path)}
        if self.format == "csv":
            desc["columns"] = self.columns
        return desc

    # ---- ImageFolder ----
    def _listing(self) -> list[str]:
        if self._files is None:
            files = []
            for dirpath, dirnames, filenames in os.walk(self.path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                rel = os.path.relpath(dirpath, self.path)
                for name in sorted(filenames):
                    if not name.startswith("."):
                        files.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
            self._files = sorted(files)
        return self._files

    def scan(self) -> tuple[int, str]:
        """(number of items, sha256 fingerprint of the input) — one pass, no image is read."""
        h = hashlib.sha256()
        if self.format == "imagefolder":
            files = self._listing()
            for rel in files:
                try:
                    size = os.stat(self.path / rel).st_size
                except OSError:  # a dangling link: rejected later as missing, fingerprinted as such
                    size = -1
                h.update(os.fsencode(rel) + b"\0" + str(size).encode() + b"\n")
            return len(files), h.hexdigest()
        with open(self.path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        if self.format == "jsonl":
            with open(self.path, "rb") as f:
                count = sum(1 for raw in f if raw.strip())
        else:
            self._check_header()
            count = sum(1 for _ in self._csv_rows())
        return count, h.hexdigest()

    def items(self) -> Iterator[Item]:
        if self.format == "imagefolder":
            yield from self._imagefolder_items()
        elif self.format == "jsonl":
            yield from self._jsonl_items()
        else:
            yield from self._csv_items()

    def _imagefolder_items(self) -> Iterator[Item]:
        for pos, rel in enumerate(self._listing()):
            if not _utf8_ok(rel):
                yield _bad(pos, pos + 1, rel.encode("utf-8", "replace").decode(), "path is not valid UTF-8")
            elif "/" not in rel:
                yield _bad(pos, pos + 1, rel, "file is not inside a class folder (SRC/<class>/<image>)")
            else:
                yield Item(pos, pos + 1, rel, str(self.path / rel), (rel.split("/", 1)[0],), rel)

    def _jsonl_items(self) -> Iterator[Item]:
        pos = 0
        with open(self.path, "rb") as f:
            for lineno, data in enumerate(f, start=1):
                if not data.strip():
                    continue
                yield self._jsonl_item(pos, lineno, data)
                pos += 1

    def _jsonl_item(self, pos: int, lineno: int, data: bytes) -> Item:
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
        return Item(pos, lineno, text[:RAW_LIMIT], str(self.path.parent / image), raw_tags, str(sid))

    # ---- CSV / TSV ----
    @property
    def _delimiter(self) -> str:
        return "\t" if self.path.suffix.lower() == ".tsv" else ","

    def _open_csv(self):
        return open(self.path, encoding="utf-8", errors="surrogateescape", newline="")

    def _check_header(self) -> list[str]:
        with self._open_csv() as f:
            header = next(csv.reader(f, delimiter=self._delimiter), [])
        if self.columns["image"] not in header:
            raise ValueError(
                f"{self.path}: the header has no image column {self.columns['image']!r} "
                f"(columns: {', '.join(header) or 'none'}); choose one with --image-column"
            )
        return header

    def _csv_rows(self) -> Iterator[tuple[int, list[str] | None, str]]:
        """(line number, row or None when the CSV parser refused the line, parser message) per non-blank row."""
        with self._open_csv() as f:
            reader = csv.reader(f, delimiter=self._delimiter)
            next(reader, None)
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield reader.line_num, None, str(exc)
                    continue
                if any(cell.strip() for cell in row):
                    yield reader.line_num, row, ""

    def _csv_items(self) -> Iterator[Item]:
        header = self._check_header()
        col = {name: i for i, name in enumerate(header)}
        for pos, (lineno, row, problem) in enumerate(self._csv_rows()):
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
            yield Item(pos, lineno, raw[:RAW_LIMIT], str(self.path.parent / image), raw_tags, sid)
