"""Every command's one error boundary (issue 25): storage, format, I/O, memory, recursion, overflow and value errors
are one line naming the file and what to do, exit code 1, never a traceback; terminal escapes in anything a command
prints or refuses with reach the screen as visible text; a truncated .bz2 names its file instead of `Aborted!`."""

from __future__ import annotations

import bz2
import errno
import json

import pytest
from click.testing import CliRunner

from tagstream.loader.data.retries import StorageError
from tagstream.tools.cli import error_line
from tagstream.tools.cli import main as cli
from tagstream.tools.vocab import VocabOptions, build_vocab
from tests.helpers.damage import small_jpeg

HOSTILE = ["\x1b]0;pwned\x07", "\x1b[2Jred", "\u202eevil"]


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, (SystemExit, type(None)))
    return result.output


def test_an_io_error_inside_a_command_is_one_line_naming_the_file(tiny_dataset):
    ds = tiny_dataset(6, shard_size=3)
    (ds / "tags.tsv").unlink()
    (ds / "tags.tsv").mkdir()  # a directory where a file belongs: IsADirectoryError deep in inspect
    output = _one_line_error(CliRunner().invoke(cli, ["inspect", str(ds)]))
    assert str(ds / "tags.tsv") in output


def test_a_manifest_nested_deeply_or_holding_a_huge_integer_is_one_line(tiny_dataset):
    ds = tiny_dataset(6, shard_size=3)
    manifest = json.loads((ds / "manifest.json").read_text())
    (ds / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    for command in ("inspect", "vocab"):
        args = [command, str(ds)] + (["--name", "v"] if command == "vocab" else [])
        assert "manifest.json: not valid JSON" in _one_line_error(CliRunner().invoke(cli, args))
    manifest["shards"][0]["images"] = 10**30
    (ds / "manifest.json").write_text(json.dumps(manifest))
    output = _one_line_error(CliRunner().invoke(cli, ["inspect", str(ds)]))
    assert "'images' must be a non-negative integer below 2**63" in output


def test_a_truncated_bz2_names_its_file_not_aborted(tmp_path):
    text = "\n".join("\t".join([str(i), f"{i:032x}"] + ["x"] * 23) for i in range(3000)) + "\n"
    data = bz2.compress(text.encode())
    (tmp_path / "meta.bz2").write_bytes(data[: len(data) // 2])
    (tmp_path / "images").mkdir()
    args = ["convert", str(tmp_path / "meta.bz2"), str(tmp_path / "ds"), "--format", "yfcc", "--images"]
    output = _one_line_error(CliRunner().invoke(cli, [*args, str(tmp_path / "images")]))
    assert "Aborted" not in output and f"{tmp_path / 'meta.bz2'}: the bz2 stream ends before" in output


def test_a_csv_header_holding_terminal_escapes_is_shown_escaped(tmp_path):
    (tmp_path / "t.csv").write_text('"\x1b]0;pwned\x07","\x1b[2Jx"\na.jpg,b\n')
    output = _one_line_error(CliRunner().invoke(cli, ["convert", str(tmp_path / "t.csv"), str(tmp_path / "ds")]))
    assert not any(c in output for c in "\x1b\x07") and "\\x1b]0;pwned\\x07" in output and "\\x1b[2Jx" in output


def test_a_utf16_table_is_refused_without_nul_bytes_on_the_terminal(tmp_path):
    (tmp_path / "t.csv").write_bytes("image,tags\na.jpg,b\n".encode("utf-16"))
    result = CliRunner().invoke(cli, ["convert", str(tmp_path / "t.csv"), str(tmp_path / "ds")])
    assert result.exit_code == 1 and "\x00" not in result.output and "Traceback" not in result.output


def test_a_garbled_index_width_file_stops_train_in_one_line(tiny_dataset, tmp_path):
    ds = tiny_dataset(8, shard_size=4)
    build_vocab(ds, "v", VocabOptions(min_count=1))
    width = ds / "index" / "00001.width.npy"
    width.write_bytes(width.read_bytes()[:20] + b"(" + width.read_bytes()[21:])  # the header no longer parses
    args = ["train", "--config", "tiny-cpu", "--dataset", str(ds), "--vocab", "v", "--out", str(tmp_path / "run")]
    args += ["--steps", "1", "--batch-size", "4", "--image-size", "16", "--set", "data.holdout_fraction=0"]
    output = _one_line_error(CliRunner().invoke(cli, [*args, "--set", "run.progress=false", "--set", "data.workers=0"]))
    assert f"{width}: not a readable .npy array" in output


def test_dedup_report_shows_hostile_class_names_escaped(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "0.jpg").write_bytes(small_jpeg())
    (tmp_path / "t.jsonl").write_text(json.dumps({"image": "images/0.jpg", "tags": HOSTILE}) + "\n")
    from tagstream.tools.convert.engine import convert

    convert(tmp_path / "t.jsonl", tmp_path / "train")
    convert(tmp_path / "t.jsonl", tmp_path / "eval")
    build_vocab(tmp_path / "eval", "v", VocabOptions(min_count=1))
    args = ["dedup", str(tmp_path / "train"), "--against", str(tmp_path / "eval"), "--name", "m", "--eval-vocab", "v"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert not any(c in result.output for c in "\x1b\x07\u202e")  # were written raw by the report
    assert "\\x1b]0;pwned\\x07" in result.output and "\\u202eevil" in result.output


@pytest.mark.parametrize(
    "exc, expected",
    [
        (StorageError("s3://b/ds/manifest.json: AccessDenied"), "s3://b/ds/manifest.json: AccessDenied; check the URL"),
        (
            OSError(errno.ENOSPC, "No space left on device", "/out/shards/00001.lmdb"),
            "/out/shards/00001.lmdb: No space",
        ),
        (OSError(errno.EMFILE, "Too many open files", "/x"), "/x: Too many open files; raise the open-file limit"),
        (MemoryError(), "tagstream verify: out of memory; lower the batch size"),
        (RecursionError("maximum recursion depth exceeded"), "tagstream verify: an input is nested too deeply"),
        (OverflowError("Python int too large to convert to C long"), "tagstream verify: a number too large"),
        (EOFError("Compressed file ended"), "tagstream verify: an input ends before its end marker"),
        (ValueError("a\nmessage\non lines"), "a message on lines"),
    ],
)
def test_each_kind_becomes_one_line_with_what_to_do(exc, expected):
    line = error_line(exc, "tagstream verify")
    assert line.startswith(expected) and "\n" not in line


def test_other_exceptions_stay_tracebacks():
    assert error_line(KeyError("bug"), "tagstream x") is None and error_line(TypeError("bug"), "tagstream x") is None
