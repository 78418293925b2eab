"""The real img2dataset, run against JPEGs, 404s and a non-image on a local HTTP server, converted as it wrote
them: its tars with their NNNNN.parquet / NNNNN_stats.json sidecars, and its Parquet output. Converted equals
its successes; every failure is a reject with img2dataset's status, error text, URL and key, and its reason
keeps download failures apart from decode failures."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from tagstream.tools.cli import main
from tagstream.tools.convert import convert
from tests.helpers.img2dataset_run import ImageServer, download, url_table

pytest.importorskip("img2dataset")

GOOD, GONE, TEXT = 12, 3, 2


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("i2d")
    server = ImageServer()
    try:
        url_table(root / "urls.parquet", server.url, good=GOOD, gone=GONE, text=TEXT)
        return {fmt: download(root / "urls.parquet", root / fmt, fmt) for fmt in ("webdataset", "parquet")}
    finally:
        server.close()


def rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def successes(folder: Path) -> int:
    return sum(json.loads(p.read_text())["successes"] for p in folder.glob("*_stats.json"))


def check_failures(found: list[dict]) -> None:
    by_reason = {}
    for r in found:
        by_reason.setdefault(r["reason"], []).append(r)
    assert {k: len(v) for k, v in by_reason.items()} == {"download_failed": GONE, "resize_failed": TEXT}
    assert all("/gone/" in r["url"] and "404" in r["detail"] for r in by_reason["download_failed"])
    assert all("/text/" in r["url"] and "failed_to_resize" in r["detail"] for r in by_reason["resize_failed"])
    assert all(r["key"].isdigit() and r["image"] == r["url"] for r in found)


def test_tars_with_sidecars(downloads, tmp_path):
    folder = downloads["webdataset"]
    assert successes(folder) == GOOD
    summary = convert(folder, tmp_path / "ds")
    assert summary.images == GOOD and summary.rejected == {"download_failed": GONE, "resize_failed": TEXT}
    check_failures(rejects(tmp_path / "ds"))
    result = CliRunner().invoke(main, ["convert", str(folder), str(tmp_path / "cli"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"images    {GOOD} in 1 shards" in result.output and f"rejected  {GONE + TEXT}" in result.output
    assert "download_failed" in result.output and "resize_failed" in result.output


def test_tar_holding_fewer_samples_than_its_stats_say(downloads, tmp_path):
    folder = tmp_path / "short"
    shutil.copytree(downloads["webdataset"], folder)
    tar = sorted(folder.glob("*.tar"))[0]
    with tarfile.open(tar) as tf:
        kept = [(m, tf.extractfile(m).read()) for m in tf.getmembers()][3:]  # the first sample lost
    with tarfile.open(tar, "w") as tf:
        for info, data in kept:
            tf.addfile(info, __import__("io").BytesIO(data))
    summary = convert(folder, tmp_path / "ds")
    assert summary.images == GOOD - 1 and summary.rejected["sidecar_mismatch"] == 1
    (note,) = [r for r in rejects(tmp_path / "ds") if r["reason"] == "sidecar_mismatch"]
    assert tar.name in note["detail"] and "1 are missing from the tar" in note["detail"]


def test_parquet_output(downloads, tmp_path):
    folder = downloads["parquet"]
    summary = convert(folder, tmp_path / "ds", image_column="jpg")
    assert summary.images == successes(folder) == GOOD
    assert summary.rejected == {"download_failed": GONE, "resize_failed": TEXT}
    check_failures(rejects(tmp_path / "ds"))
