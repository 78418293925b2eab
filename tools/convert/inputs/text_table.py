"""What JSON lines and CSV/TSV share: one metadata file, local or a URL, naming its images relative to its folder;
the scan hashes the file and the stamp of every image it names and notes marks (position, byte offset, lines
before) that let a part seek close to its start instead of reading the file from its top.

Also the numbered-lines reader that JSON lines and YFCC's table use (`numbered_lines`, `mark_before`).
"""

from __future__ import annotations

import abc
import bisect
import hashlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

from tagstream.loader.data import storage
from tagstream.tools.convert.inputs.base import InputKind, Item
from tagstream.tools.convert.inputs.bounds import LINE_LIMIT
from tagstream.tools.convert.inputs.paths import stamp


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
    for data, size in bounded_lines(f):
        lineno += 1
        if data.strip():
            if marks is not None and pos % every == 0:
                marks.append((pos, offset, lineno - 1))
            if pos >= start:
                yield pos, lineno, data
            pos += 1
        offset += size


def bounded_lines(f, limit: int = LINE_LIMIT) -> Iterator[tuple[bytes, int]]:
    """(line, its length) of each line of a binary file; a line over `limit` bytes is cut to limit + 1 bytes
    (its reader rejects it as too long) and the rest of it read in pieces, never held."""
    while data := f.readline(limit + 1):
        if len(data) <= limit or data.endswith(b"\n"):
            yield data, len(data)
            continue
        size = len(data)
        while more := f.readline(1 << 20):
            size += len(more)
            if more.endswith(b"\n"):
                break
        yield data, size


def encoding_problem(head: bytes) -> str | None:
    """Why a metadata file that starts with `head` is not UTF-8 text, named (UTF-16/32 by their byte-order
    marks or NUL bytes, which no UTF-8 text holds), or None."""
    for bom, name in (
        (b"\xff\xfe\x00\x00", "UTF-32"),
        (b"\x00\x00\xfe\xff", "UTF-32"),
        (b"\xff\xfe", "UTF-16"),
        (b"\xfe\xff", "UTF-16"),
    ):
        if head.startswith(bom):
            return f"is {name} text (it starts with a {name} byte-order mark)"
    if b"\x00" in head:
        guess = "UTF-16" if head[1::2].count(0) > len(head) // 4 or head[0::2].count(0) > len(head) // 4 else "binary"
        return f"holds NUL bytes: {guess} data, not UTF-8 text"
    return None


class TextTableInput(InputKind):
    """A metadata file of one input per non-blank line or row; a subclass enumerates it (`_items`)."""

    def __init__(self, path, options):
        super().__init__(path, options)
        self._marks: list[tuple[int, int, int]] | None = None  # the scan's, or a loaded scan state's

    @abc.abstractmethod
    def _items(self, start: int = 0, marks: list | None = None) -> Iterator[Item]:
        """Items from position `start` on, read from the nearest of self._marks; `marks` collects a scan's."""

    def items(self, start: int = 0) -> Iterator[Item]:
        yield from self._items(start)

    def scan(self) -> tuple[int, str]:
        h = hashlib.sha256()
        with self._open() as f:
            problem = encoding_problem(f.read(4096))
            if problem is not None:
                raise ValueError(
                    f"{storage.redact(str(self.path))} {problem}; tagstream reads UTF-8: convert it first "
                    "(iconv -f UTF-16 -t UTF-8 FILE > FILE.utf8)"
                )
            f.seek(0)
            while block := f.read(1 << 22):
                h.update(block)
        count = 0
        # the images too (size and modification time of each local file): an image changed between an
        # interrupted run and its rerun must not leave a dataset of old and new bytes that verifies
        marks: list[tuple[int, int, int]] = []
        for item in self._items(marks=marks):
            if item.image is not None and item.error is None:
                h.update(os.fsencode(item.image) + b"\0" + stamp(item.image) + b"\n")
            count += 1
        self._marks = marks
        return count, h.hexdigest()

    def scan_state(self, store: Path | None = None) -> dict | None:
        return {f"{self.name}_marks": self._marks} if self._marks is not None else None

    def load_scan_state(self, state: dict, store: Path | None = None) -> None:
        self._marks = [tuple(int(v) for v in mark) for mark in state.get(f"{self.name}_marks", [])]

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
