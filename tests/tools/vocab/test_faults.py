"""`tagstream vocab` against hostile lists and names: byte-order marks, a 100,000-entry synonyms line, names
that are paths or end in a newline, hashtags holding terminal escape sequences."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.vocab import Vocab
from tagstream.tools.cli import main
from tagstream.tools.convert.engine import convert
from tagstream.tools.vocab.build import VocabOptions, build_vocab
from tagstream.tools.vocab.lists import read_synonyms, read_taglist
from tests.helpers.damage import small_jpeg

HOSTILE = ["\x1b]0;pwned\x07", "\x1b[2J\x1b[31mred", "\u202eevil", "sunset"]  # title change, clear screen, RTL override


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A converted dataset of 3 images, each tagged with every HOSTILE tag."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "images").mkdir()
    lines = []
    for i in range(3):
        (root / "images" / f"{i}.jpg").write_bytes(small_jpeg(seed=i))
        lines.append(json.dumps({"image": f"images/{i}.jpg", "tags": HOSTILE}))
    (root / "tags.jsonl").write_text("\n".join(lines) + "\n")
    convert(root / "tags.jsonl", root / "ds")
    return root / "ds"


def test_byte_order_marks_are_not_part_of_the_first_entry(tmp_path, tiny_dataset):
    syn, stop = tmp_path / "syn.tsv", tmp_path / "stop.txt"
    syn.write_bytes("\ufeffmod3_0\tmod5_0\n".encode())
    stop.write_bytes("\ufeffall\n".encode())
    assert read_synonyms(syn)[0].words == ("mod3_0", "mod5_0")  # was ("\ufeffmod3_0", ...): a class of its own
    assert read_taglist(stop) == {"all"}
    ds = tiny_dataset(12)
    build_vocab(ds, "v", VocabOptions(synonyms=str(syn), stoplist=str(stop)))
    classes = {c.name: c.members for c in Vocab(Dataset(ds), "v").classes()}
    assert "all" not in classes and set(classes["mod3_0"]) == {"mod3_0", "mod5_0"}
    assert not any("\ufeff" in name for name in classes)


def test_a_long_synonyms_line_is_read_in_linear_time(tmp_path):
    """100,000 entries (each once more at the end: repeats on a line are dropped): was quadratic in the line's
    length (40k entries 7.6 s, 200k over 120 s); now about 1 s per 100k entries, the cost of canonicalizing."""
    n = 100_000
    words = [f"w{i}" for i in range(n)]
    (tmp_path / "syn.tsv").write_text("\t".join(words + words[::-1]) + "\n")
    (line,) = read_synonyms(tmp_path / "syn.tsv")
    assert line.canonical == "w0" and line.words == tuple(words)


@pytest.mark.parametrize("name", ["v\n", "../../x", "v/../../x", ".v", "v\x1b"])
def test_names_that_are_paths_or_end_in_a_newline_are_refused(tiny_dataset, name):
    ds = tiny_dataset(6)
    with pytest.raises(ValueError, match="vocabulary name .* is not allowed"):
        build_vocab(ds, name, VocabOptions())
    res = CliRunner().invoke(main, ["vocab", str(ds), "--name", name])
    assert res.exit_code == 1 and "is not allowed" in res.output and "Traceback" not in res.output
    assert not (ds / "vocab").exists() or not any((ds / "vocab").iterdir())


def test_tags_reach_the_terminal_escaped(hostile):
    res = CliRunner().invoke(main, ["vocab", str(hostile), "--name", "v"])
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.output and "\u202e" not in res.output and "\x07" not in res.output  # was echoed raw
    assert "\\x1b[2j\\x1b[31mred" in res.output and "\\u202eevil" in res.output  # canonical tags: case-folded
    assert "\x1b[2j\x1b[31mred" in Vocab(Dataset(hostile), "v").class_names()  # the data itself is kept as it is


def test_two_concurrent_builders_of_one_name_one_wins_and_the_other_is_one_line(tmp_path, tiny_dataset):
    """Two `vocab --name same` at once both reported success and could leave a garbled classes.tsv."""
    import subprocess
    import sys

    from tagstream.tools.verify.checks import verify

    ds = tiny_dataset(30, shard_size=10)
    cmd = [sys.executable, "-m", "tagstream.tools.cli", "vocab", str(ds), "--name", "same", "--min-count", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [(p.wait(120), p.stdout.read()) for p in procs]
    assert sorted(rc for rc, _ in outs) == [0, 1], outs
    ((_, refused),) = [o for o in outs if o[0] == 1]
    assert refused.count("\n") == 1 and ("is being built by another process" in refused or "already exists" in refused)
    assert verify(ds).ok and Vocab(Dataset(ds), "same").class_names()[0] == "all"


def test_a_vocabulary_being_built_is_refused_before_its_passes(tmp_path, tiny_dataset):
    from tagstream.loader.data.vocab import stage_vocab

    ds = tiny_dataset(6, shard_size=3)
    holder = stage_vocab(Dataset(ds), "v", replace=False)  # another builder of 'v', mid-build
    try:
        res = CliRunner().invoke(main, ["vocab", str(ds), "--name", "v", "--min-count", "1"])
        assert (
            res.exit_code == 1 and f"vocabulary 'v' is being built by another process (pid {os.getpid()})" in res.output
        )
    finally:
        holder.close()
    res = CliRunner().invoke(main, ["vocab", str(ds), "--name", "v", "--min-count", "1"])
    assert res.exit_code == 0, res.output
