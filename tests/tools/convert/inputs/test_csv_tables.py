"""CSV/TSV from a position: a part reaches its first input from the scan's nearest mark (a seek), not by
parsing every row before it, and gets the same items as an enumeration from the top; the rows read from the
binary file equal what csv.reader gets from the file opened as text (utf-8-sig, surrogateescape, newline="")."""

from __future__ import annotations

import csv
import io
import json
import random

import pytest

from tagstream.tools.convert.inputs import Source, csv_reader
from tagstream.tools.convert.inputs.csv_reader import BOM, Lines, csv_rows
from tests.helpers.damage import scrub_lines

LIMIT = csv.field_size_limit()  # a longer field is refused by the parser (csv.Error)


def _text_rows(data: bytes, delimiter: str) -> list[tuple[int, list[str] | None, str]]:
    """The twin: (line number, row or None, parser message) of each non-blank row of the file read as text, the
    header skipped, quoting strict: a refused record that ran over lines is parsed again from its second line."""
    out = []
    with io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        lines = list(f)
    first = 1  # index of the first line the reader is given (line 1, the header, is index 0)
    while True:
        reader = csv.reader(iter(lines[first:]), delimiter=delimiter, strict=True)
        while True:
            before = reader.line_num
            try:
                row = next(reader)
            except StopIteration:
                return out
            except csv.Error as exc:
                start = first + before + 1
                out.append((start, None, f"{exc} (the record starting on line {start})"))
                if reader.line_num > before + 1:
                    first = start
                    break
                continue
            if any(cell.strip() for cell in row):
                out.append((first + reader.line_num, row, ""))


def _collection(delimiter: str = ",", bare_cr: bool = False) -> bytes:
    """A header behind a byte-order mark, then rows whose image and id encode their index, with everything that
    moves positions or line numbers: LF and CRLF (and bare CR) line ends, quoted fields holding \\n, \\r\\n
    (and \\r), blank and delimiter-only lines, a row with too few fields, invalid UTF-8, an empty image, two
    rows the parser refuses (a field over the limit, one of them quoted across two lines), no final newline."""
    d = delimiter.encode()
    out = [BOM + d.join([b"image", b"tags", b"caption", b"id"]) + b"\r\n"]
    for i in range(30):
        end = b"\r" if bare_cr and i % 4 == 2 else b"\r\n" if i % 3 == 0 else b"\n"
        if i % 5 == 1:
            inner = b"\r" if bare_cr else b"\r\n"
            fields = [
                f"img/{i}.jpg".encode(),
                b'"t' + str(i).encode() + d + b" spans" + inner + b'line"',
                b'"a caption\nwith #h' + str(i).encode() + b'"',
                str(i).encode(),
            ]
        else:
            fields = [f"img/{i}.jpg".encode(), f"t{i % 3}".encode(), b"", str(i).encode()]
        out.append(d.join(fields) + end)
        if i % 7 == 0:
            out.append([b"\n", d * 3 + b"\r\n", b"  " + d + b" \t\n"][i % 3])
        if i == 10:
            out.append(d.join([b"img/short.jpg", b"x"]) + b"\n")
            out.append(d.join([b"img/bad\xff\xfe.jpg", b"x", b"", b"bad"]) + b"\n")
            out.append(d.join([b"img/long.jpg", b"z" * (LIMIT + 1), b"", b"long"]) + b"\n")
        if i == 20:
            out.append(d.join([b"", b"t", b"", b"noimage"]) + b"\n")
            out.append(
                d.join(
                    [b"img/q.jpg", b'"' + b"q" * (LIMIT // 2 + 10) + b"\n" + b"q" * (LIMIT // 2 + 10) + b'"', b"", b"q"]
                )
                + b"\n"
            )
    out.append(d.join([b"img/end.jpg", b"e", b"", b"end"]))
    return b"".join(out)


@pytest.fixture(params=["csv", "csv-bare-cr", "tsv"])
def path(request, tmp_path, monkeypatch):
    monkeypatch.setattr(csv_reader, "CSV_MARK_EVERY", 3)
    monkeypatch.setattr(csv_reader, "READ", 50)  # long lines read in pieces
    kind = request.param
    p = tmp_path / ("in.tsv" if kind == "tsv" else "in.csv")
    p.write_bytes(_collection("\t" if kind == "tsv" else ",", bare_cr=kind == "csv-bare-cr"))
    return p


def test_rows_read_from_bytes_equal_the_text_file_read(path):
    data = path.read_bytes()
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with open(path, "rb") as f:
        rows = [(lineno, row, problem) for _, lineno, row, problem in csv_rows(f, delimiter)]
    assert rows == _text_rows(data, delimiter)
    with open(path, "rb") as f, open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as text:
        assert list(Lines(f)) == list(text)


def test_items_from_any_position_equal_the_enumeration_from_the_top(path):
    scanned = Source(path)
    count, _ = scanned.scan()
    everything = list(scanned.items())
    # 37: the second line of the overlong quoted field is a row of its own (quoting is strict: parsing resumes
    # on the line after a refused record's first line), refused for its field count
    assert count == len(everything) == 37 and [i.pos for i in everything] == list(range(37))
    errors = [i.error for i in everything if i.error is not None]
    assert sum(e.startswith("CSV parser refused the row: field larger") for e in errors) == 2
    assert sum("fields, the header has 4" in e for e in errors) == 2
    assert sum(e == "row is not valid UTF-8" for e in errors) == 1 and sum("empty image" in e for e in errors) == 1
    assert len(errors) == 6 and everything[1].tags == ("t1", "spans", "line", "h1")  # a line end inside quotes
    assert everything[-1].line == len(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"))
    state = json.loads(json.dumps(scanned.scan_state()))  # what a part on another machine receives
    assert [m[0] for m in state["csv_marks"]] == list(range(0, 37, 3))
    unscanned = Source(path)  # no marks: it reads from the top, parsing rows before `start` but making no items
    part = Source(path)
    part.load_scan_state(state)
    for start in range(count + 2):
        for source in (scanned, unscanned, part):
            assert list(source.items(start)) == everything[start:], start


def test_the_bare_cr_collection_has_bare_cr_line_ends_inside_and_outside_quotes():
    data = _collection(bare_cr=True)
    assert data.count(b"\r") - data.count(b"\r\n") > 5


def test_a_part_seeks_to_the_mark_instead_of_reading_the_rows_before_it(path):
    scanned = Source(path)
    scanned.scan()
    everything = list(scanned.items())
    state = scanned.scan_state()
    pos, offset, _ = state["csv_marks"][-1]
    # the rows before the last mark overwritten (line ends kept, the header kept): quotes, blank lines and
    # refused rows gone, a reader that parsed its way there would number what follows differently
    scrub_lines(path, path.read_bytes().index(b"\n") + 1, offset)
    part = Source(path)
    part.load_scan_state(state)
    assert list(part.items(pos + 1)) == everything[pos + 1 :]
    assert list(Source(path).items(pos + 1)) != everything[pos + 1 :]  # from the top: the damage shows


@pytest.fixture
def field_limit():
    """csv.field_size_limit, the process-wide limit put back after the test."""
    before = csv.field_size_limit()
    yield csv.field_size_limit
    csv.field_size_limit(before)


PIECES = [
    b"a",
    b"bc",
    b",",
    b'"',
    b'""',
    b"\r",
    b"\n",
    b"\r\n",
    b" ",
    b"\xff",
    b"\xe2\x82",
    b"\xe2\x82\xac",
    b"\xef\xbb\xbf",
]


@pytest.mark.parametrize("seed", range(40))
def test_random_bytes_read_and_resumed_as_the_text_file_reads_them(seed, monkeypatch, field_limit):
    """Random mixes of quotes, delimiters, every line end and broken UTF-8 (a long one crossing the text
    reader's chunk boundaries; reads of a few bytes that cut lines anywhere; a field limit so small that many rows are refused, some inside quotes): the
    rows equal the twin's, and a read from every mark equals the rest."""
    monkeypatch.setattr(csv_reader, "CSV_MARK_EVERY", 1 + seed % 3)
    monkeypatch.setattr(csv_reader, "READ", 1 + seed % 13 if seed % 5 else 1 << 16)  # reads cut lines, \r\n, the BOM
    if seed % 4 == 3:
        field_limit(4)
    rng = random.Random(seed)
    data = (BOM if seed % 2 else b"") + b"h\n" + b"".join(rng.choice(PIECES) for _ in range(30000 if seed < 4 else 300))
    with io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", errors="surrogateescape", newline="") as text:
        assert list(Lines(io.BytesIO(data))) == list(text)
    marks: list = []
    rows = list(csv_rows(io.BytesIO(data), ",", marks=marks))
    assert [(lineno, row, problem) for _, lineno, row, problem in rows] == _text_rows(data, ",")
    assert [m[0] for m in marks] == list(range(0, len(rows), csv_reader.CSV_MARK_EVERY))
    for mark in rng.sample(marks, min(len(marks), 30)):  # the short mixes: every mark
        for start in (mark[0], mark[0] + 1):
            assert list(csv_rows(io.BytesIO(data), ",", start, mark)) == rows[start:]
