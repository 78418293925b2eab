"""Inputs that yield nothing are errors, an all-rejected conversion exits non-zero with its rejects kept, tags
that are not where the user said are named in one line, and a rerun notices deleted tables (issues 24, 25)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tagstream.tools.cli import main
from tests.helpers.webdataset import image_bytes, write_tar


def run(*args: str):
    return CliRunner().invoke(main, ["convert", *map(str, args), "--no-progress"])


def one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return lines[0]


def test_brace_pattern_naming_no_file_stops_and_writes_nothing(tmp_path):
    res = run(tmp_path / "shard" / "{00000..00003}.tar", tmp_path / "ds")
    assert res.exit_code == 1 and "no file named by" in one_line(res.output) and "{00000..00003}" in res.output
    assert not (tmp_path / "ds").exists()


def test_empty_metadata_file_stops_and_writes_nothing(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    res = run(tmp_path / "empty.jsonl", tmp_path / "ds")
    assert res.exit_code == 1 and "empty.jsonl yields no input" in one_line(res.output)
    assert not (tmp_path / "ds").exists()


def test_every_input_rejected_exits_non_zero_with_the_rejects_kept(tmp_path):
    lines = [json.dumps({"image": f"missing{i}.jpg", "tags": ["x"]}) for i in range(2)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    res = run(tmp_path / "m.jsonl", tmp_path / "ds")
    assert res.exit_code == 1 and "every one of the 2 inputs" in one_line(res.output)
    assert "missing_file 2" in res.output and not (tmp_path / "ds" / "manifest.json").exists()
    assert len((tmp_path / "ds" / "rejects.jsonl").read_text().splitlines()) == 2


def _tar_with_hashtags(tmp_path, tagged: int, untagged: int):
    members = []
    for i in range(tagged + untagged):
        ext, data = image_bytes(i)
        field = "tags" if i < tagged else "hashtags"
        members += [(f"{i:04d}.{ext}", data), (f"{i:04d}.json", json.dumps({field: ["beach"]}).encode())]
    return write_tar(tmp_path / "s.tar", members)


def test_misnamed_tags_field_is_named_in_one_warning_line(tmp_path):
    src = _tar_with_hashtags(tmp_path, 1, 3)
    res = CliRunner().invoke(main, ["convert", str(src), str(tmp_path / "ds"), "--no-progress"])
    assert res.exit_code == 0 and "untagged  3 of 4 images" in res.output
    (warning,) = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert "more than half" in warning and "hashtags" in warning and "--tags-field" in warning
    strict = run(src, tmp_path / "ds2", "--require-tags")
    assert strict.exit_code == 1 and "Error: more than half of the images have no tag" in strict.output


def test_a_tagged_majority_says_nothing(tmp_path):
    res = run(_tar_with_hashtags(tmp_path, 3, 1), tmp_path / "ds", "--require-tags")
    assert res.exit_code == 0 and "untagged  1 of 4 images" in res.output and "warning" not in res.output


def test_rerun_with_a_table_deleted_is_not_already_complete(tmp_path):
    src = _tar_with_hashtags(tmp_path, 4, 0)
    assert run(src, tmp_path / "ds").exit_code == 0
    for table in ("tags.tsv", "rejects.jsonl"):
        (tmp_path / "ds" / table).unlink()
        res = run(src, tmp_path / "ds")
        assert res.exit_code == 0 and "already" not in res.output and f"{table} of the finished dataset" in res.output
        assert (tmp_path / "ds" / table).is_file() and (tmp_path / "ds" / "manifest.json").is_file()
