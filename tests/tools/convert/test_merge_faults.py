"""The merge fault matrix: a damaged, forged or missing part, and a full disk, each stop `tagstream merge` with one
line and rc != 0 (never a signal, never a merged dataset missing inputs), keep the parts, and a merge after the
repair gives the one-process dataset. The merge runs in a child process: a SIGBUS must not take pytest with it."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest

from tagstream.loader.data import format as fmt
from tagstream.tools.convert.engine import convert
from tagstream.tools.convert.merge import merge
from tagstream.tools.convert.parts import PARTS_DIR, PartSpec, convert_part
from tagstream.tools.verify.checks import verify
from tests.helpers.damage import flip_bytes, run_python, truncate
from tests.helpers.records import dataset_records, partition_source

SHARD = 2
N = 3


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return partition_source(tmp_path_factory.mktemp("merge_faults_src"))


@pytest.fixture(scope="module")
def parts(source, tmp_path_factory) -> Path:
    """OUT with its 3 parts committed, never merged: each test works on a copy."""
    out = tmp_path_factory.mktemp("merge_faults") / "ds"
    for i in range(N):
        convert_part(source, out, PartSpec(i, N), shard_size=SHARD)
    return out


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory) -> list:
    out = tmp_path_factory.mktemp("merge_faults_one") / "ds"
    convert(source, out, shard_size=SHARD)
    return dataset_records(out)


@pytest.fixture
def out(parts, tmp_path) -> Path:
    copy = tmp_path / "ds"
    shutil.copytree(parts, copy)
    return copy


def part(out: Path, index: int) -> Path:
    return out / PARTS_DIR / PartSpec(index, N).name


def merge_cli(out: Path, *, file_limit: int | None = None):
    """`tagstream merge OUT` in a child process; file_limit: the largest file it may write (a full disk)."""
    limit = ""
    if file_limit is not None:
        limit = (
            "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({file_limit}, {file_limit})); "
        )
    code = f"{limit}from tagstream.tools.cli import main; main(['merge', {str(out)!r}])"
    return run_python(code, timeout=300)


def refused(result, *words: str) -> None:
    """rc 1 (not a signal), one line on stderr naming what it must, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr[-2000:]
    assert all(w in lines[0] for w in words), lines[0]


def kept(out: Path) -> None:
    """Nothing looks whole, every part is still there."""
    assert not (out / fmt.MANIFEST).exists()
    assert all((part(out, i) / "part.json").exists() for i in range(N))


def redo_part(source: Path, out: Path, index: int) -> None:
    shutil.rmtree(part(out, index))
    convert_part(source, out, PartSpec(index, N), shard_size=SHARD)


@pytest.mark.parametrize("index", [0, 1])  # 0: its shards are renamed into place; 1: rewritten record by record
def test_a_truncated_part_shard_is_one_line_not_sigbus(source, out, reference, index):
    data = fmt.shard_path(part(out, index), "00001") / "data.mdb"
    truncate(data, data.stat().st_size // 2)
    refused(merge_cli(out), str(data), "truncated", f"--part {index}/{N}")
    kept(out)
    assert not (out / fmt.SHARDS_DIR).exists() or not any((out / fmt.SHARDS_DIR).iterdir())  # nothing renamed
    redo_part(source, out, index)
    merge(out)
    assert dataset_records(out) == reference and verify(out).ok


def test_a_part_shard_with_flipped_bytes_is_refused_before_it_is_renamed(source, out, reference):
    data = fmt.shard_path(part(out, 0), "00001") / "data.mdb"
    flip_bytes(data, data.stat().st_size // 2)  # size and LMDB meta pages intact
    refused(merge_cli(out), str(data), "sha256")
    kept(out)
    assert data.exists()  # still in its part, not renamed into the dataset
    redo_part(source, out, 0)
    merge(out)
    assert dataset_records(out) == reference


def _drop_shard(record: dict, k: int, *, cover: bool) -> None:
    gone = record["shards"].pop(k)
    if cover:  # the next shard stretched over the gap, the missing images counted as its rejects
        nxt = record["shards"][k]
        nxt["input_start"] = gone["input_start"]
        nxt["rejected"] += gone["images"] + gone["rejected"]


@pytest.mark.parametrize("cover", [False, True])
def test_a_part_json_forged_with_inputs_missing_is_refused(source, out, reference, cover):
    path = part(out, 1) / "part.json"
    record = json.loads(path.read_text())
    _drop_shard(record, 0, cover=cover)
    path.write_text(json.dumps(record))
    refused(merge_cli(out), str(path), "--part 1/3")
    kept(out)
    redo_part(source, out, 1)
    merge(out)
    assert dataset_records(out) == reference


def test_a_part_json_listing_fewer_new_tags_than_its_records_use_is_refused(source, out, reference):
    """Part 1 reuses part 0's tags, so its shards are rewritten with a tag map; one new tag dropped from its record
    leaves a record with a local id past the map's end."""
    path = part(out, 1) / "part.json"
    record = json.loads(path.read_text())
    last = max(k for k, s in enumerate(record["shards"]) if s["new_tags"])
    record["shards"][last]["new_tags"].pop()
    path.write_text(json.dumps(record))
    refused(merge_cli(out), str(part(out, 1)), "new tags", f"--part 1/{N}")
    kept(out)
    redo_part(source, out, 1)
    merge(out)
    assert dataset_records(out) == reference


def _edit_part(out: Path, index: int, **fields) -> None:
    path = part(out, index) / "part.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda out: (part(out, 2) / "part.json").write_text("[]"), "got a JSON list"),
        (lambda out: (part(out, 2) / "part.json").write_text("[" * 100_000), "unreadable"),
        (lambda out: _edit_part(out, 2, shards=5), "'shards' and 'tail' must be lists"),
        (lambda out: _edit_part(out, 2, input_stop=17), "this part of the scan recorded in OUT is inputs 12..18"),
        (lambda out: fmt.index_path(part(out, 1), "00000", "width").unlink(), "00000.width.npy"),
        (lambda out: shutil.rmtree(part(out, 1) / fmt.INDEX_DIR), "index file"),
        (lambda out: shutil.rmtree(part(out, 2)), "1 of 3 parts not committed yet"),
        (lambda out: shutil.rmtree(out / PARTS_DIR), "3 of 3 parts not committed yet"),
        (lambda out: shutil.rmtree(fmt.shard_path(part(out, 1), "00000")), "is missing"),
    ],
)
def test_missing_or_malformed_parts_are_one_line(out, damage, named):
    damage(out)
    refused(merge_cli(out), named)
    assert not (out / fmt.MANIFEST).exists()


def test_a_full_disk_is_one_line_and_a_rerun_finishes(out, reference):
    result = merge_cli(out, file_limit=8192)  # a part's rewritten shard outgrows it
    refused(result, "writing the merged dataset failed", "File too large", "free space and rerun")
    kept(out)
    merge(out)
    assert dataset_records(out) == reference and verify(out).ok and not (out / PARTS_DIR).exists()


def test_the_parts_are_deleted_only_once_the_merged_dataset_verifies(out, reference, monkeypatch):
    """A merged dataset that fails verify (here: a placed shard damaged behind the merge's back, as a bad disk
    would) loses its manifest and keeps its parts."""
    merge_module = importlib.import_module("tagstream.tools.convert.merge")

    real = merge_module.finish

    def finish_then_damage(out_dir, *args):
        manifest = real(out_dir, *args)
        flip_bytes(fmt.shard_path(out_dir, "00003") / "data.mdb", 100)
        return manifest

    monkeypatch.setattr(merge_module, "finish", finish_then_damage)
    with pytest.raises(merge_module.ConvertRefused, match="does not verify .*shard 00003"):
        merge(out)
    kept(out)
