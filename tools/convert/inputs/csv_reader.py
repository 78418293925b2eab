"""CSV/TSV rows as csv.reader gets them from `open(path, encoding="utf-8-sig", errors="surrogateescape",
newline="")`, but read from the binary file so that each line's byte offset is known: the scan notes where
every CSV_MARK_EVERY-th row starts, and a part seeks to the nearest mark instead of parsing every row before
its start. Exact because csv.reader keeps nothing from one record to the next but `line_num`: every record
starts at a line start outside any quoted field, so a fresh reader from there (line count added) parses what
follows as one reading from the top does, refused rows and blank rows included.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from typing import BinaryIO

CSV_MARK_EVERY = 1 << 16  # a CSV scan notes where every 65,536th row starts (~15,000 marks at 1e9 rows)
READ = 1 << 16  # bytes read at most at once: a longer line, or a file of bare \r line ends, is read in pieces
BOM = b"\xef\xbb\xbf"  # utf-8-sig drops it at the start of the file: not part of the first column's name
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")  # newline="" text mode: lines end after \n, \r\n or \r


class Lines:
    """The lines of a binary file from `offset` (where `f` stands), split and decoded as newline="" text mode
    with utf-8-sig and surrogateescape does; `offset` is always where the next line starts.

    Decoding line by line equals decoding the whole file: line ends are ASCII bytes, never inside a
    multi-byte character, and surrogateescape turns each undecodable byte into one character on its own."""

    def __init__(self, f: BinaryIO, offset: int = 0):
        self.offset = offset
        self._f = f

    def __iter__(self) -> Iterator[str]:
        read, tail = self._f.readline, bytearray()  # tail: the start of a line, from earlier reads
        while data := read(READ):
            cr = data.find(b"\r")
            if not tail and data[-1] == 10 and (cr < 0 or cr == len(data) - 2):  # one whole line, the usual case
                yield self._text(data)
                continue
            if tail and tail[-1] == 13:  # a read ended in \r: that line ends there, or with this read's first \n
                if data[0] == 10:
                    tail.append(10)
                    data = data[1:]
                yield self._text(bytes(tail))
                tail.clear()
            *lines, last = _LINE.findall(data) or [b""]
            for line in lines:
                if tail:
                    line = bytes(tail + line)
                    tail.clear()
                yield self._text(line)
            tail += last
            if last.endswith(b"\n"):
                yield self._text(bytes(tail))
                tail.clear()
        if tail:
            yield self._text(bytes(tail))

    def _text(self, line: bytes) -> str:
        at = self.offset
        self.offset += len(line)
        return (line[3:] if at == 0 and line.startswith(BOM) else line).decode("utf-8", "surrogateescape")


def csv_header(f: BinaryIO, delimiter: str) -> list[str]:
    """The first row of the file ([] for an empty file)."""
    return next(csv.reader(Lines(f), delimiter=delimiter), [])


def csv_rows(
    f: BinaryIO, delimiter: str, start: int = 0, mark: tuple[int, int, int] | None = None, marks: list | None = None
) -> Iterator[tuple[int, int, list[str] | None, str]]:
    """(position, line number, row or None when the csv parser refused it, parser message) of each non-blank
    row from position `start` on. `mark` (position, byte offset, lines before: one the scan noted, at or before
    `start`) is where reading begins, after the header; None reads from the top. Rows before `start` are only
    parsed and tested for blankness. `marks` collects a mark every CSV_MARK_EVERY positions.

    Quoting is strict: a record the parser refuses is one refused row named by its first line, and when it
    spanned lines (a quote opened and never closed runs on to the end of the file, or past csv's field size
    limit), parsing resumes on the line after that first line, so one unclosed quote costs one row, not the
    rest of the file."""
    pos, offset, base = mark if mark is not None else (0, 0, 0)
    f.seek(offset)
    lines = Lines(f, offset)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    if mark is None:
        next(reader, None)  # the header
    every = CSV_MARK_EVERY
    while True:
        # where the next record starts: csv.reader takes lines one at a time, as it needs them
        at, before = lines.offset, base + reader.line_num
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row, problem = None, f"{exc} (the record starting on line {before + 1})"
            if base + reader.line_num > before + 1:  # it ran over lines: resume on the line after its first
                f.seek(at)
                first = Lines(f, at)
                next(iter(first), None)  # the record's first line
                f.seek(first.offset)  # (a read may have run past it: seek back to where it ends)
                lines, base = Lines(f, first.offset), before + 1
                reader = csv.reader(lines, delimiter=delimiter, strict=True)
            lineno = before + 1
        else:
            if not any(cell.strip() for cell in row):
                continue
            problem, lineno = "", base + reader.line_num
        if marks is not None and pos % every == 0:
            marks.append((pos, at, before))
        if pos >= start:
            yield pos, lineno, row, problem
        pos += 1
