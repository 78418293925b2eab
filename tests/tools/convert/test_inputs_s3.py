"""Conversion from object storage, through a real S3-protocol server (moto on 127.0.0.1) behind the fault proxy:
tars from s3:// (a brace pattern and a prefix), JSON lines whose images are objects, a connection dropped
mid-object (retried, same dataset), a server that keeps failing (a clear error, then a rerun resumes)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tagstream.tools.cli import main
from tagstream.tools.convert.engine import convert
from tagstream.tools.convert.inputs import TarInput
from tests.helpers.records import dataset_records, same_dataset_parts
from tests.helpers.s3server import SECRET, _moto_server, s3_server  # noqa: F401 - fixtures
from tests.helpers.webdataset import write_collection

SHARD = 4
TARS = "s3://bkt/tars/{00000..00002}.tar"


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("collection"))


@pytest.fixture(scope="module")
def reference(collection, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ds"
    convert(collection["tars"], out, shard_size=SHARD)
    return out


@pytest.fixture
def bucket(s3_server, collection):  # noqa: F811
    s3_server.create_bucket("bkt")
    root = collection["jsonl"].parent
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".tar", ".jsonl", ".jpg", ".png"):
            s3_server.put("bkt", path.relative_to(root).as_posix(), path.read_bytes())
    s3_server.proxy.reset_counts()
    return s3_server


def same_as_reference(out, reference) -> None:
    assert dataset_records(out) == dataset_records(reference)
    ours, theirs = same_dataset_parts(out), same_dataset_parts(reference)
    for key in ("tags.tsv", "rejects", "images", "inputs", "rejects_by_reason", "reencoded"):
        assert ours[key] == theirs[key], key


def test_tars_and_images_from_s3(bucket, reference, collection, tmp_path):
    summary = convert(TARS, tmp_path / "braces", shard_size=SHARD, format="tar")
    assert summary.manifest["source"]["path"] == TARS
    same_as_reference(tmp_path / "braces", reference)
    gets = bucket.proxy.counts("GET", "/bkt/tars/*")
    assert set(gets) == {f"/bkt/tars/{t:05d}.tar" for t in range(3)}
    convert("s3://bkt/tars/", tmp_path / "prefix", shard_size=SHARD, format="tar")
    same_as_reference(tmp_path / "prefix", reference)
    convert("s3://bkt/c.jsonl", tmp_path / "jsonl", shard_size=SHARD)  # images are objects too
    local = tmp_path / "local"
    convert(collection["jsonl"], local, shard_size=SHARD)
    assert [r[:2] + r[3:] for r in dataset_records(tmp_path / "jsonl")] == [
        r[:2] + r[3:] for r in dataset_records(local)
    ]


def _fault_after_scan(monkeypatch, server, pattern: str, kind: str, times: int) -> None:
    """Inject the fault once the scan is over, so that it hits the conversion's own reads."""
    real = TarInput.scan
    scans = []

    def scan(self):
        result = real(self)
        if not scans:
            server.proxy.inject(pattern, kind, times=times)
        scans.append(1)
        return result

    monkeypatch.setattr(TarInput, "scan", scan)


def test_dropped_connection_is_retried(bucket, reference, tmp_path, monkeypatch):
    bucket.proxy.inject("/bkt/tars/00001.tar", "drop", times=1)  # hits the scan
    _fault_after_scan(monkeypatch, bucket, "/bkt/tars/00002.tar", "drop", 1)  # hits the conversion
    convert(TARS, tmp_path / "ds", shard_size=SHARD, format="tar")
    assert bucket.proxy.faulted[("drop", "/bkt/tars/00001.tar")] == 1
    assert bucket.proxy.faulted[("drop", "/bkt/tars/00002.tar")] == 1
    same_as_reference(tmp_path / "ds", reference)


def test_failing_server_stops_clearly_then_resumes(bucket, reference, tmp_path, monkeypatch):
    _fault_after_scan(monkeypatch, bucket, "/bkt/tars/00002.tar", "500", -1)
    out = tmp_path / "ds"
    args = ["convert", TARS, str(out), "--format", "tar", "--shard-size", str(SHARD), "--no-progress"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    message = res.output.strip().splitlines()[-1]
    assert "s3://bkt/tars/00002.tar" in message and "gave up after" in message and "rerun the same command" in message
    assert SECRET not in res.output
    bucket.proxy.clear_faults()  # the server is well again
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "resumed after 12 of 21 inputs" in res.output  # tars 0 and 1 were committed before the failure
    same_as_reference(out, reference)
