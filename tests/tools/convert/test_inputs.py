"""Acceptance of issue 12: one collection as JSON lines, WebDataset tars and Parquet converts to the same records
in the same order; a conversion of tars killed (SIGKILL) mid-tar resumes to the identical dataset; inspect
shows the source kind and the rejects per reason; `synth --as tar` tars convert like its JSON lines."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import signal

import pytest
from click.testing import CliRunner

from tagstream.loader.data.writer import ShardWriter
from tagstream.tools.cli import main
from tagstream.tools.convert.engine import convert
from tests.helpers.records import dataset_records, same_dataset_parts
from tests.helpers.webdataset import write_collection

SHARD = 4


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("collection"))


@pytest.fixture(scope="module")
def from_tars(collection, tmp_path_factory):
    out = tmp_path_factory.mktemp("tars") / "ds"
    convert(collection["tars"], out, shard_size=SHARD)
    return out


def test_tars_parquet_and_jsonl_give_the_same_records(collection, from_tars, tmp_path):
    convert(collection["jsonl"], tmp_path / "j", shard_size=SHARD)
    convert(collection["parquet"], tmp_path / "p", shard_size=SHARD, image_column="jpg", id_column="key")
    records = dataset_records(from_tars)
    assert len(records) == collection["count"]
    assert [r[2] for r in records] == [f"{i:06d}" for i in range(collection["count"])]  # input order kept
    assert dataset_records(tmp_path / "j") == records
    assert dataset_records(tmp_path / "p") == records
    for out in (tmp_path / "j", tmp_path / "p"):
        ours, theirs = same_dataset_parts(from_tars), same_dataset_parts(out)
        assert ours["tags.tsv"] == theirs["tags.tsv"] and ours["reencoded"] == theirs["reencoded"]
    kinds = {
        json.loads((d / "manifest.json").read_text())["source"]["format"]
        for d in (from_tars, tmp_path / "j", tmp_path / "p")
    }
    assert kinds == {"tar", "jsonl", "parquet"}


def _killed_child(src: str, out: str, at: int) -> None:
    records = [0]
    real_add = ShardWriter.add

    def add(self, *args, **kwargs):
        if records[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        records[0] += 1
        real_add(self, *args, **kwargs)

    ShardWriter.add = add
    convert(src, out, shard_size=SHARD)
    os._exit(0)  # not killed: the parent sees exit code 0 and fails the test


def test_kill_mid_tar_then_rerun_is_identical(collection, from_tars, tmp_path):
    out = tmp_path / "ds"
    # killed after shard 0 (inputs 0-3); the rerun resumes inside tar 0 (inputs 0-6) and is killed after shard 1;
    # the last run resumes at input 8, inside tar 1 (inputs 7-11)
    for at in (5, 6):
        proc = mp.get_context("fork").Process(target=_killed_child, args=(str(collection["tars"]), str(out), at))
        proc.start()
        proc.join(60)
        assert proc.exitcode == -signal.SIGKILL
    summary = convert(collection["tars"], out, shard_size=SHARD)
    assert summary.resumed_from == 8 and not summary.already_complete
    assert dataset_records(out) == dataset_records(from_tars)
    assert same_dataset_parts(out) == same_dataset_parts(from_tars)
    assert (out / "manifest.json").read_text() == (from_tars / "manifest.json").read_text()


def test_inspect_shows_kind_and_rejects(collection, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    data = (collection["tars"] / "00001.tar").read_bytes()
    (bad / "00000.tar").write_bytes((collection["tars"] / "00000.tar").read_bytes())
    (bad / "00001.tar").write_bytes(data[: len(data) // 2])
    out = tmp_path / "ds"
    res = CliRunner().invoke(main, ["convert", str(bad), str(out), "--no-progress", "--min-side", "37"])
    assert res.exit_code == 0, res.output
    report = json.loads(CliRunner().invoke(main, ["inspect", str(out), "--json"]).output)
    assert report["dataset"]["source"]["format"] == "tar"
    by_reason = report["rejects"]["by_reason"]
    assert set(by_reason) == {"damaged_file", "too_small"} and by_reason["damaged_file"] == 1
    text = CliRunner().invoke(main, ["inspect", str(out)]).output
    assert re.search(r"^\s+format\s+tar$", text, re.MULTILINE) and re.search(
        r"^\s+damaged_file\s+1$", text, re.MULTILINE
    )


def test_synth_as_tar_converts_like_its_jsonl(tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "synth",
            str(tmp_path / "w"),
            "--images",
            "14",
            "--corrupt",
            "6",
            "--as",
            "tar",
            "--tar-samples",
            "6",
            "--downstream-classes",
            "0",
            "--min-side",
            "40",
            "--max-side",
            "60",
        ],
    )
    assert res.exit_code == 0, res.output
    tars = sorted((tmp_path / "w" / "tars").iterdir())
    assert [p.name for p in tars] == ["00000.tar", "00001.tar", "00002.tar", "00003.tar"]
    for src, out in (
        (tmp_path / "w" / "hashtags.jsonl", "j"),
        (str(tmp_path / "w" / "tars" / "{00000..00003}.tar"), "t"),
    ):
        res = runner.invoke(
            main,
            ["convert", str(src), str(tmp_path / out), "--no-progress", "--format", "jsonl" if out == "j" else "tar"],
        )
        assert res.exit_code == 0, res.output
    jsonl, tar = dataset_records(tmp_path / "j"), dataset_records(tmp_path / "t")
    assert len(tar) == 14 and [r[:2] + r[3:] for r in tar] == [r[:2] + r[3:] for r in jsonl]  # ids differ: key vs path
    again = tmp_path / "again"
    runner.invoke(
        main,
        [
            "synth",
            str(again),
            "--images",
            "14",
            "--corrupt",
            "6",
            "--as",
            "tar",
            "--tar-samples",
            "6",
            "--downstream-classes",
            "0",
            "--min-side",
            "40",
            "--max-side",
            "60",
        ],
    )
    assert [p.read_bytes() for p in tars] == [p.read_bytes() for p in sorted((again / "tars").iterdir())]
