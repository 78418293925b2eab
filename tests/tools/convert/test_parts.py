"""Partitioned conversion without Ray: `--part I/N` + merge gives a one-process conversion's records, in order;
bad partition arguments are refused with nothing written; a merge killed anywhere resumes."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.manifest import read_manifest
from tagstream.tools.cli import main
from tagstream.tools.convert.engine import ConvertRefused, convert
from tagstream.tools.convert.launch import run_conversion
from tagstream.tools.convert.merge import merge
from tagstream.tools.convert.parts import PARTS_DIR, PartSpec, convert_part
from tagstream.tools.verify.checks import verify
from tests.helpers.records import dataset_records, partition_source, same_dataset_parts

SHARD = 2


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return partition_source(tmp_path_factory.mktemp("parts_src"))


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "ds"
    convert(source, out, shard_size=SHARD)
    return out


def convert_parts(source: Path, out: Path, n: int, order=None) -> None:
    for i in order if order is not None else reversed(range(n)):
        convert_part(source, out, PartSpec(i, n), shard_size=SHARD)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and modification time: to show nothing was written."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("n", [1, 3, 6, 20])  # 6: part 1 holds only rejects; 20: more parts than inputs
def test_parts_then_merge_equal_one_process(source, reference, tmp_path, n):
    out = tmp_path / "ds"
    convert_parts(source, out, n)
    summary = merge(out)
    assert dataset_records(out) == dataset_records(reference)
    assert same_dataset_parts(out) == same_dataset_parts(reference)
    assert len(dataset_records(out)) == 13 and summary.images == 13
    assert verify(out).ok
    assert not (out / PARTS_DIR).exists()
    assert read_manifest(out)["options"]["parts"] == n
    assert merge(out).already_complete  # a second merge changes nothing


def test_parts_of_a_csv_start_from_the_scans_marks(source, tmp_path, monkeypatch):
    """The same inputs as a CSV (a quoted field with a line break among them), a mark every 2 rows: parts seek to
    the mark before their start and the merge equals a one-process conversion of the CSV."""
    import csv
    import json

    from tagstream.tools.convert.inputs import csv_reader

    monkeypatch.setattr(csv_reader, "CSV_MARK_EVERY", 2)
    rows = []
    for line in source.read_text().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            rows.append(["{not json", ""])  # a bad row: rejected alike
            continue
        rows.append([obj["image"], " ".join(obj["tags"])])
    rows[4][1] += "\n#continued"  # a quoted line break inside a field
    table = source.with_name("h.csv")
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows([["image", "tags"], *rows])
    one = tmp_path / "one"
    convert(table, one, shard_size=SHARD)
    out = tmp_path / "ds"
    convert_parts(table, out, 5)
    merge(out)
    assert dataset_records(out) == dataset_records(one) and len(dataset_records(one)) >= 10
    assert same_dataset_parts(out) == same_dataset_parts(one)


def test_parts_of_json_lines_start_from_the_scans_marks(source, reference, tmp_path, monkeypatch):
    """With a mark every 2 inputs, parts seek to the mark before their start (json_lines.JSONL_MARK_EVERY) and
    still give a one-process conversion's records."""
    from tagstream.tools.convert.inputs import json_lines

    monkeypatch.setattr(json_lines, "JSONL_MARK_EVERY", 2)
    out = tmp_path / "ds"
    convert_parts(source, out, 5)
    merge(out)
    assert dataset_records(out) == dataset_records(reference)
    assert same_dataset_parts(out) == same_dataset_parts(reference)


def test_part_tag_ids_differ_and_merge_rewrites_them(source, reference, tmp_path):
    """The merge's work is real: part 2 of 3 numbers its tags on its own, the merged records hold global ids."""
    out = tmp_path / "ds"
    convert_parts(source, out, 3)
    part = out / PARTS_DIR / PartSpec(2, 3).name
    local = [t for s in __import__("json").loads((part / "part.json").read_text())["shards"] for t in s["new_tags"]]
    ref_tags = (reference / fmt.TAGS).read_text().splitlines()[1:]
    global_ids = {line.split("\t")[1]: int(line.split("\t")[0]) for line in ref_tags}
    assert [global_ids[t] for t in local] != list(range(len(local)))
    merge(out)
    ds, ref = Dataset(out), Dataset(reference)
    assert ds.tags == ref.tags


def test_cli_parts_and_merge(source, reference, tmp_path):
    out = tmp_path / "ds"
    runner = CliRunner()
    for i in (1, 0, 2):
        res = runner.invoke(
            main, ["convert", str(source), str(out), "--part", f"{i}/3", "--shard-size", str(SHARD), "--no-progress"]
        )
        assert res.exit_code == 0, res.output
        assert f"part {i}/3" in res.output and "committed" in res.output
    res = runner.invoke(main, ["convert", str(source), str(out), "--part", "1/3", "--shard-size", str(SHARD)])
    assert res.exit_code == 0 and "already committed" in res.output
    res = runner.invoke(main, ["merge", str(out), "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert "images    13" in res.output
    assert dataset_records(out) == dataset_records(reference)
    res = runner.invoke(main, ["verify", str(out)])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3/3", r"part index I must be in \[0, 2\] for N=3, got 3"),
        ("0/0", r"number of parts N must be in \[1, "),
        ("-1/3", "must look like I/N"),
        ("one/3", "must look like I/N"),
        ("1/3/4", "must look like I/N"),
    ],
)
def test_bad_part_argument(source, tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        PartSpec.parse(text)
    res = CliRunner().invoke(main, ["convert", str(source), str(tmp_path / "ds"), "--part", text])
    assert res.exit_code != 0 and "Error" in res.output
    assert not (tmp_path / "ds").exists()


def test_bad_engine_combinations(source, tmp_path):
    for kwargs, message in [
        ({"engine": "ray", "part": "0/2"}, "does not go with --engine ray"),
        ({"part": "0/2", "parts": 3}, "--parts 3 disagrees with --part 0/2"),
        ({"address": "auto"}, "--address names a Ray cluster"),
        ({"engine": "spark"}, "unknown engine 'spark'; allowed: local, ray"),
    ]:
        with pytest.raises(ValueError, match=message):
            run_conversion(source, tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()


def test_plan_once_then_parts_do_not_scan(source, reference, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    runner = CliRunner()
    res = runner.invoke(main, ["convert", str(source), str(out), "--parts", "3", "--shard-size", str(SHARD)])
    assert res.exit_code == 0, res.output
    assert "18 inputs in 3 parts, 0 committed" in res.output and "--part I/3" in res.output
    from tagstream.tools.convert.inputs import Source

    def no_scan(self):
        raise AssertionError("a part scanned the whole input again")

    monkeypatch.setattr(Source, "scan", no_scan)
    for i in range(3):
        res = runner.invoke(
            main, ["convert", str(source), str(out), "--part", f"{i}/3", "--shard-size", str(SHARD), "--no-progress"]
        )
        assert res.exit_code == 0, res.output
    # a part with other options is refused from the recorded plan, as after a scan
    with pytest.raises(ConvertRefused, match="other options .*shard_size: 2 then, 3 now"):
        convert_part(source, out, PartSpec(0, 3), shard_size=3)
    monkeypatch.undo()
    assert runner.invoke(main, ["merge", str(out)]).exit_code == 0
    assert dataset_records(out) == dataset_records(reference)


def test_replanning_refuses_a_changed_input(source, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(source.parent, src)
    out = tmp_path / "ds"
    run_conversion(src / source.name, out, parts=2, shard_size=SHARD)
    convert_part(src / source.name, out, PartSpec(0, 2), shard_size=SHARD)
    (src / source.name).write_text((src / source.name).read_text().replace('"u1"', '"u9"'))
    with pytest.raises(ConvertRefused, match="changed since this conversion started"):
        run_conversion(src / source.name, out, parts=2, shard_size=SHARD)


def test_merge_refusals_write_nothing(source, tmp_path):
    out = tmp_path / "ds"
    convert_parts(source, out, 3, order=[0, 2])
    before = tree(out)
    with pytest.raises(ConvertRefused, match=r"1 of 3 parts not committed yet: 1/3 \(inputs 6\.\.11\)"):
        merge(out)
    # a part of another N
    with pytest.raises(ConvertRefused, match="other options .*parts: 3 then, 2 now"):
        convert_part(source, out, PartSpec(1, 2), shard_size=SHARD)
    # a one-process conversion into a partitioned OUT
    with pytest.raises(ConvertRefused, match="planned in 3 parts: run each part .*--part I/3.*tagstream merge OUT"):
        convert(source, out, shard_size=SHARD)
    assert tree(out) == before
    # a stray part of another N (copied in by hand)
    stray = out / PARTS_DIR / PartSpec(1, 2).name
    shutil.copytree(out / PARTS_DIR / PartSpec(0, 3).name, stray)
    convert_part(source, out, PartSpec(1, 3), shard_size=SHARD)
    before = tree(out)
    with pytest.raises(ConvertRefused, match="parts of N=2 beside this conversion's N=3"):
        merge(out)
    assert tree(out) == before and not (out / fmt.MANIFEST).exists()


def test_part_from_another_source_refused(source, tmp_path):
    other = partition_source(tmp_path / "other")
    other.write_text(other.read_text().replace('"u1"', '"elsewhere"'))
    out = tmp_path / "ds"
    convert_part(source, out, PartSpec(0, 3), shard_size=SHARD)
    before = tree(out)
    with pytest.raises(ConvertRefused, match="holds a conversion of .*h.jsonl.* not of .*other/h.jsonl"):
        convert_part(other, out, PartSpec(1, 3), shard_size=SHARD)
    assert tree(out) == before
    convert_parts(other, tmp_path / "ds_other", 3)
    convert_parts(source, out, 3, order=[1, 2])
    foreign = out / PARTS_DIR / PartSpec(1, 3).name
    shutil.rmtree(foreign)
    shutil.copytree(tmp_path / "ds_other" / PARTS_DIR / PartSpec(1, 3).name, foreign)
    before = tree(out)
    with pytest.raises(
        ConvertRefused, match=r"part 1/3 .* another source or with other options \(source, fingerprint differ"
    ):
        merge(out)
    assert tree(out) == before


def _merge_killed(out: str, replace_at: int) -> None:
    calls, real = [0], os.replace

    def replace(a, b):
        if calls[0] == replace_at:
            os.kill(os.getpid(), signal.SIGKILL)
        calls[0] += 1
        real(a, b)

    os.replace = replace
    merge(out)
    os._exit(0)


def _merge_renames(parts: Path, scratch: Path) -> int:
    """How many os.replace calls a merge of a copy of `parts` makes (each one is a point where a kill may land)."""
    calls, real = [0], os.replace
    shutil.copytree(parts, scratch)

    def counting(a, b):
        calls[0] += 1
        real(a, b)

    os.replace = counting
    try:
        merge(scratch)
    finally:
        os.replace = real
    return calls[0]


def _kill_and_rerun(parts: Path, out: Path, at: int) -> list[tuple]:
    shutil.copytree(parts, out)
    proc = mp.get_context("fork").Process(target=_merge_killed, args=(str(out), at))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL, f"merge was not killed at rename {at}"
    with pytest.raises(fmt.FormatError, match="no manifest.json"):
        Dataset(out)  # a killed merge never leaves a dataset that looks whole
    merge(out)
    assert verify(out).ok
    return dataset_records(out)


@pytest.mark.parametrize("at", [8, 9, 17])  # inside the first shard placed (rename, state) and a rewritten one
def test_merge_killed_resumes_identically(source, reference, tmp_path, at):
    parts = tmp_path / "parts"
    convert_parts(source, parts, 2)
    assert _kill_and_rerun(parts, tmp_path / "ds", at) == dataset_records(reference)


@pytest.mark.slow
def test_merge_killed_at_every_rename_resumes_identically(source, tmp_path):
    parts = tmp_path / "parts"
    for i in range(2):
        convert_part(source, parts, PartSpec(i, 2), shard_size=5)
    total = _merge_renames(parts, tmp_path / "counted")
    assert (
        total == 1 + 4 * 9 + 3
    )  # part 1's tag map, 4 shards x (7 index arrays, rename, state), tags, rejects, manifest
    expected = dataset_records(tmp_path / "counted")
    for at in range(total):
        assert _kill_and_rerun(parts, tmp_path / f"k{at}", at) == expected, f"killed at rename {at}"


@pytest.mark.parametrize("kind", ["tars", "parquet"])
def test_parts_of_tars_and_tables_equal_one_process(kind, tmp_path, monkeypatch):
    """Any source kind: parts cut inside and between tars / row groups start at their position from the
    recorded scan state, and the merge equals a one-process conversion."""
    from tagstream.tools.convert.inputs import Source
    from tests.helpers.webdataset import write_collection

    collection = write_collection(tmp_path / "c")
    columns = {"image_column": "jpg", "id_column": "key"} if kind == "parquet" else {}
    convert(collection[kind], tmp_path / "one", shard_size=SHARD, **columns)
    run_conversion(collection[kind], tmp_path / "ds", parts=4, shard_size=SHARD, **columns)
    from tagstream.tools.convert.inputs import ParquetInput, TarInput

    for reader in (Source, TarInput, ParquetInput):
        monkeypatch.setattr(reader, "scan", lambda self: pytest.fail("a part scanned the whole input again"))
    for i in (3, 1, 0, 2):
        convert_part(collection[kind], tmp_path / "ds", PartSpec(i, 4), shard_size=SHARD, **columns)
    monkeypatch.undo()
    merge(tmp_path / "ds")
    assert len(dataset_records(tmp_path / "one")) == collection["count"]
    assert dataset_records(tmp_path / "ds") == dataset_records(tmp_path / "one")
    assert same_dataset_parts(tmp_path / "ds") == same_dataset_parts(tmp_path / "one")


def test_ray_address_where_nothing_listens_is_refused_at_once(source, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RuntimeError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        run_conversion(source, tmp_path / "ds", engine="ray", address=f"127.0.0.1:{port}", parts=2)
    assert not (tmp_path / "ds").exists()
