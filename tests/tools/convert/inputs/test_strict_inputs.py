"""Strict metadata parsers: a CSV quote never closed costs its row (named by its line), not every later row; a
JSON line nested too deep is a reject naming its line and the conversion goes on; UTF-16 metadata is named as
such in one line without NUL bytes; a tar sample repeating a member is rejected by reason."""

from __future__ import annotations

import json

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagstream.tools.cli import main
from tagstream.tools.convert.inputs import Source
from tests.helpers.webdataset import image_bytes, sample_members, write_tar


def items(path, fmt="auto", **options) -> list:
    source = Source(path, fmt, **options)
    count, _ = source.scan()
    got = list(source.items())
    assert len(got) == count
    return got


def test_csv_unclosed_quote_rejects_its_row_and_parsing_resumes(tmp_path):
    rows = ["image,tags,caption"] + [f"{i}.jpg,t{i},ok" for i in range(3)]
    rows.insert(2, '9.jpg,t9,"opens a quote and never closes it')
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    got = items(tmp_path / "t.csv")
    assert [i.error is None for i in got] == [True, False, True, True]
    assert got[1].line == 3 and "line 3" in got[1].error
    assert [i.image.rsplit("/", 1)[-1] for i in got if i.error is None] == ["0.jpg", "1.jpg", "2.jpg"]


def test_json_line_too_deep_is_a_reject_naming_its_line(tmp_path):
    lines = [json.dumps({"image": "a.jpg", "tags": ["x"]}), "[" * 100_000 + "]" * 100_000]
    lines.append(json.dumps({"image": "b.jpg", "tags": {"deep": [[[[[[1]]]]]]}}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    got = items(tmp_path / "m.jsonl")
    assert got[0].error is None and "line 2 nests deeper than 64" in got[1].error
    assert "'tags' must be a list" in got[2].error  # shallow enough to parse: judged on its fields


def test_utf16_metadata_is_named_in_one_line(tmp_path):
    (tmp_path / "t.csv").write_bytes("image,tags\na.jpg,x\n".encode("utf-16"))
    res = CliRunner().invoke(main, ["convert", str(tmp_path / "t.csv"), str(tmp_path / "ds"), "--no-progress"])
    assert res.exit_code == 1 and "\x00" not in res.output and len(res.output.strip().splitlines()) == 1
    assert "is UTF-16 text" in res.output and "UTF-8" in res.output


def test_repeated_member_of_a_sample_is_rejected(tmp_path):
    members = sample_members(0) + [("000001.jpg", image_bytes(1)[1]), ("000001.jpg", image_bytes(2)[1])]
    got = items(write_tar(tmp_path / "s.tar", members))
    assert [i.reason if i.error else "ok" for i in got] == ["ok", "duplicate_member"]
    assert "two .jpg members" in got[1].error


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), cut=st.integers(min_value=0, max_value=400))
def test_mutated_csv_and_jsonl_give_items_or_rejects_never_a_traceback(tmp_path, data, cut):
    """Arbitrary bytes after a valid header (and a valid file cut anywhere): every input an Item or a reject, or
    the whole file refused in one ValueError line."""
    base = b'image,tags,caption\na.jpg,x,"q"\nb.jpg,y,z\n'
    for name, body in (("m.csv", base[:cut] + data), ("m.jsonl", b'{"image": "a.jpg"}\n' + data)):
        path = tmp_path / name
        path.write_bytes(body)
        try:
            got = items(path)
        except ValueError as exc:
            assert "\n" not in str(exc)
            continue
        assert all(i.error is None or i.line >= 1 for i in got)
