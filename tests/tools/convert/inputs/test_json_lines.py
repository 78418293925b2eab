"""JSON lines from a position: a part reaches its first input from the scan's nearest mark (a seek), not by
reading and parsing every line before it, and gets the same items as an enumeration from the top."""

from __future__ import annotations

import json

import pytest

from tagstream.tools.convert.inputs import Source, json_lines
from tests.helpers.damage import scrub_lines


def _lines() -> bytes:
    """30 inputs with everything that moves positions or line numbers: a byte-order mark, blank and
    whitespace-only lines, CRLF, lines that do not parse, a non-object, invalid UTF-8."""
    out = ["\ufeff" + json.dumps({"image": "a/0.jpg", "tags": ["x"]}), "", "   "]
    for i in range(1, 25):
        out.append(json.dumps({"image": f"a/{i}.jpg", "tags": [f"t{i % 3}"], "id": i}) + ("\r" if i % 5 == 0 else ""))
        if i % 7 == 0:
            out.append("\t")
    out += ["{not json", "[1, 2]", json.dumps({"image": "a/last.jpg"})]
    return (
        "\n".join(out).encode()
        + b"\n\xff\xfe bad utf-8\n"
        + json.dumps({"image": "a/end.jpg", "tags": []}).encode()
        + b"\n"
    )


@pytest.fixture
def path(tmp_path, monkeypatch):
    monkeypatch.setattr(json_lines, "JSONL_MARK_EVERY", 4)
    p = tmp_path / "in.jsonl"
    p.write_bytes(_lines())
    return p


def test_items_from_any_position_equal_the_enumeration_from_the_top(path):
    scanned = Source(path)
    count, _ = scanned.scan()
    everything = list(scanned.items())
    assert count == len(everything) == 30 and [i.pos for i in everything] == list(range(30))
    assert sum(i.error is not None for i in everything) == 3  # not JSON, a list, invalid UTF-8 (no tags is fine)
    state = json.loads(json.dumps(scanned.scan_state()))  # what a part on another machine receives
    assert [m[0] for m in state["jsonl_marks"]] == list(range(0, 30, 4))
    unscanned = Source(path)  # no marks: it reads from the top, testing lines for blankness only
    part = Source(path)
    part.load_scan_state(state)
    for start in range(count + 2):
        for source in (scanned, unscanned, part):
            assert list(source.items(start)) == everything[start:], start


def test_a_part_seeks_to_the_mark_instead_of_reading_the_lines_before_it(path):
    scanned = Source(path)
    scanned.scan()
    everything = list(scanned.items())
    state = scanned.scan_state()
    pos, offset, _ = state["jsonl_marks"][-1]
    # the bytes before the last mark overwritten (newlines kept, blank lines made non-blank): a reader that
    # counted or parsed its way there would number what follows differently
    scrub_lines(path, 0, offset)
    part = Source(path)
    part.load_scan_state(state)
    assert list(part.items(pos + 1)) == everything[pos + 1 :]
    assert list(Source(path).items(pos + 1)) != everything[pos + 1 :]  # from the top: the damage shows
