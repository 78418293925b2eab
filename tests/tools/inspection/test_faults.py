"""`tagstream inspect` shows hashtags holding terminal escape sequences as visible escapes."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tagstream.tools.cli import main
from tagstream.tools.convert.engine import convert
from tagstream.tools.convert.tags import canonical_tag
from tagstream.tools.inspection.text import printable
from tests.helpers.damage import small_jpeg


def test_printable_escapes_terminal_controls_only():
    assert printable("a\x1b[31mb\x07\x9b\u202ec\u2066d") == "a\\x1b[31mb\\x07\\x9b\\u202ec\\u2066d"
    kept = "tab\tnew\nline é 日本 👨\u200d👩\u200d👧 #tag"  # layout, letters, emoji sequences (joiner) untouched
    assert printable(kept) == kept


def test_inspect_escapes_hostile_tags(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "0.jpg").write_bytes(small_jpeg())
    tags = ["\x1b]0;pwned\x07", "\x1b[2Jred", "\u202eevil"]
    (tmp_path / "t.jsonl").write_text(json.dumps({"image": "images/0.jpg", "tags": tags}) + "\n")
    convert(tmp_path / "t.jsonl", tmp_path / "ds")
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "ds")])
    assert res.exit_code == 0, res.output
    assert not any(c in res.output for c in "\x1b\x07\u202e")  # were written raw: a title change, a cleared screen
    assert "\\x1b]0;pwned\\x07" in res.output and "\\x1b[2jred" in res.output and "\\u202eevil" in res.output
    js = CliRunner().invoke(main, ["inspect", str(tmp_path / "ds"), "--json"])
    shown = {row["tag"] for row in json.loads(js.output)["tags"]["top"]}
    assert shown == {canonical_tag(t) for t in tags} and "\x1b" not in js.output
