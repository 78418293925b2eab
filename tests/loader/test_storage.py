"""loader/data/storage.py against a real S3-protocol server (moto on 127.0.0.1) behind the fault proxy."""

from __future__ import annotations

import hashlib
import time

import pytest

from tagstream.loader.data import storage
from tagstream.loader.data.storage import ChecksumError, Retry, StorageError
from tests.helpers.s3server import SECRET, _moto_server, s3_server  # noqa: F401 - fixtures

FAST = Retry(attempts=3, backoff_s=0.01, max_backoff_s=0.05, timeout_s=2.0)
DATA = bytes(range(256)) * 400  # 102,400 bytes


@pytest.fixture
def bucket(s3_server):  # noqa: F811
    s3_server.create_bucket("bkt")
    s3_server.put("bkt", "ds/a.bin", DATA)
    s3_server.put("bkt", "ds/sub/b.txt", b"hello")
    s3_server.proxy.reset_counts()
    return s3_server


def test_url_helpers():
    assert storage.is_url("s3://b/k") and storage.is_url("file:///tmp/x") and storage.is_url("https://h/x")
    assert not storage.is_url("/tmp/x") and not storage.is_url("rel/x")
    assert storage.join("s3://b/ds/", "shards", "00001.lmdb/") == "s3://b/ds/shards/00001.lmdb"
    assert storage.protocol("GS://b/x") == "gs" and storage.protocol("/x") == "file"
    assert str(storage.local_path("file:///tmp/x")) == "/tmp/x" and storage.local_path("s3://b/x") is None
    red = storage.redact("https://user:pw@host/p?X-Amz-Signature=abc&X-Amz-Credential=k failed; token=zzz")
    assert "pw" not in red and "abc" not in red and "zzz" not in red and "https://host/p" in red
    with pytest.raises(ValueError, match="attempts=0"):
        Retry(attempts=0)


def test_read_list_get_put(bucket, tmp_path):
    assert storage.read_bytes("s3://bkt/ds/sub/b.txt") == b"hello"
    assert storage.list_files("s3://bkt/ds") == ["a.bin", "sub/b.txt"]
    assert storage.list_files("s3://bkt/nothing") == []
    assert storage.exists("s3://bkt/ds/a.bin") and not storage.exists("s3://bkt/ds/none")
    sha = hashlib.sha256(DATA).hexdigest()
    assert storage.get("s3://bkt/ds/a.bin", tmp_path / "a.bin", expected_size=len(DATA), sha256=sha) == len(DATA)
    assert (tmp_path / "a.bin").read_bytes() == DATA
    assert bucket.proxy.counts("GET", "/bkt/ds/a.bin") == {"/bkt/ds/a.bin": 1}
    storage.put(tmp_path / "a.bin", "s3://bkt/copy/a.bin")
    storage.put_bytes(b"xyz", "s3://bkt/copy/c.txt")
    assert storage.read_bytes("s3://bkt/copy/a.bin") == DATA and storage.read_bytes("s3://bkt/copy/c.txt") == b"xyz"
    with pytest.raises(FileNotFoundError, match="s3://bkt/ds/none"):
        storage.read_bytes("s3://bkt/ds/none")


def test_get_in_chunks_resumes_after_a_drop(bucket, tmp_path):
    bucket.proxy.inject("/bkt/ds/a.bin", "drop", times=2)
    storage.get("s3://bkt/ds/a.bin", tmp_path / "a.bin", retry=FAST, chunk=30_000)
    assert (tmp_path / "a.bin").read_bytes() == DATA
    # 4 chunks + 2 dropped attempts; a drop costs one chunk, not the whole object
    assert bucket.proxy.counts("GET", "/bkt/ds/a.bin")["/bkt/ds/a.bin"] == 6
    assert sum(bucket.proxy.bytes_sent("/bkt/ds/a.bin").values()) < 2 * len(DATA)


def test_500_then_success_and_open_read(bucket):
    bucket.proxy.inject("/bkt/ds/sub/b.txt", "500", times=2)
    assert storage.read_bytes("s3://bkt/ds/sub/b.txt", FAST) == b"hello"
    bucket.proxy.inject("/bkt/ds/a.bin", "drop", times=1)
    with storage.open_read("s3://bkt/ds/a.bin", FAST, block_size=10_000) as f:
        assert f.read(5) == DATA[:5]
        f.seek(50_000)
        assert f.read() == DATA[50_000:]


def test_corrupt_once_is_downloaded_again(bucket, tmp_path):
    bucket.proxy.inject("/bkt/ds/a.bin", "corrupt", times=1)
    storage.get("s3://bkt/ds/a.bin", tmp_path / "a.bin", sha256=hashlib.sha256(DATA).hexdigest(), retry=FAST)
    assert (tmp_path / "a.bin").read_bytes() == DATA


@pytest.mark.parametrize("chunk", [30_000, 1 << 20])
def test_corrupt_always_is_a_clear_error(bucket, tmp_path, chunk):
    # ranged reads (chunk < size) are only caught by our sha256: downloaded twice, then ChecksumError;
    # a whole-object read is also caught by botocore's own checksum: retried, then a StorageError
    bucket.proxy.inject("/bkt/ds/a.bin", "corrupt", times=-1)
    expected = ChecksumError if chunk < len(DATA) else StorageError
    with pytest.raises(expected, match=r"s3://bkt/ds/a.bin: .*(sha256 \w+ does not match|checksum)") as err:
        storage.get(
            "s3://bkt/ds/a.bin", tmp_path / "a.bin", sha256=hashlib.sha256(DATA).hexdigest(), retry=FAST, chunk=chunk
        )
    assert SECRET not in str(err.value)
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_persistent_500_gives_up_naming_the_object(bucket):
    bucket.proxy.inject("/bkt/ds/sub/b.txt", "500", times=-1)
    with pytest.raises(StorageError, match=r"s3://bkt/ds/sub/b.txt: .*gave up after 3 attempts") as err:
        storage.read_bytes("s3://bkt/ds/sub/b.txt", FAST)
    assert "\n" not in str(err.value) and SECRET not in str(err.value)
    assert bucket.proxy.counts("GET", "/bkt/ds/sub/b.txt")["/bkt/ds/sub/b.txt"] == 3


def test_stalled_and_gone_server_fail_in_bounded_time(bucket, tmp_path):
    bucket.proxy.inject("/bkt/ds/sub/b.txt", "stall", times=-1)
    quick = Retry(attempts=2, backoff_s=0.01, max_backoff_s=0.01, timeout_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="s3://bkt/ds/sub/b.txt"):
        storage.read_bytes("s3://bkt/ds/sub/b.txt", quick)
    stalled = time.monotonic() - t0
    bucket.proxy.go_away()
    with pytest.raises(StorageError, match=r"s3://bkt/ds/a.bin: .*gave up after 2 attempts"):
        storage.get("s3://bkt/ds/a.bin", tmp_path / "a.bin", retry=quick)
    # bound by the policy (2 attempts x 0.5 s timeout), generous for a loaded machine; not a speed test
    assert stalled < 30
