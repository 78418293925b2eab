"""Object storage never touches what tagstream did not write: push leaves foreign objects alone (and refuses a
foreign prefix without replace_foreign), and a bucket's keys never become paths outside the mirror's cache.
Against moto's S3 server behind the fault proxy (tests/helpers/s3server.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tagstream.loader.data import format as fmt
from tagstream.loader.data import storage
from tagstream.loader.data.cache import SOURCE, Mirror
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.push import JOURNAL_DIR, LEDGER, ForeignPrefix, push
from tagstream.loader.data.remote_keys import key_problem, local_file
from tagstream.loader.data.writer import write_mask
from tagstream.tools.cli import main as cli
from tests.helpers.datasets import make_index_dataset
from tests.helpers.s3server import _moto_server, s3_server  # noqa: F401 - fixtures

URL = "s3://bkt/ds"


def keys(server, prefix: str = "ds/") -> dict[str, bytes]:
    """Every object under prefix, with its bytes."""
    client = server.client()
    listed = client.list_objects_v2(Bucket="bkt", Prefix=prefix).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket="bkt", Key=o["Key"])["Body"].read() for o in listed}


@pytest.fixture
def bucket(s3_server):  # noqa: F811
    s3_server.create_bucket("bkt")
    return s3_server


def test_push_refuses_a_prefix_of_someone_elses_objects_and_deletes_nothing(bucket, tmp_path):
    ds = make_index_dataset(tmp_path / "ds", n=16, shard_size=8)
    theirs = {"ds/photos/a.jpg": b"a user's photo", "ds/notes.txt": b"notes", "ds/manifest.json": b"{}"}
    for key, data in theirs.items():
        bucket.put("bkt", key, data)
    with pytest.raises(
        ForeignPrefix, match=r"s3://bkt/ds holds 3 object\(s\) that no tagstream push wrote.*--replace-foreign"
    ):
        push(ds.root, URL)
    assert keys(bucket) == theirs  # nothing written, nothing deleted
    refused = CliRunner().invoke(cli, ["push", str(ds.root), URL])
    assert refused.exit_code != 0 and "--replace-foreign" in refused.output and "Traceback" not in refused.output
    assert keys(bucket) == theirs

    report = push(ds.root, URL, replace_foreign=True)
    after = keys(bucket)
    assert after["ds/photos/a.jpg"] == b"a user's photo" and after["ds/notes.txt"] == b"notes"
    assert report.foreign == ("notes.txt", "photos/a.jpg") and report.removed == 0
    assert len(Dataset(URL, cache_dir=tmp_path / "cache")) == 16


def test_push_deletes_only_its_own_objects_of_an_earlier_version(bucket, tmp_path):
    big = make_index_dataset(tmp_path / "big", n=32, shard_size=8)  # 4 shards
    write_mask(big.root, "odd", np.arange(32) % 2 == 1)
    push(big.root, URL)
    bucket.put("bkt", "ds/vocab/theirs/notes.txt", b"keep me")  # a user's object among ours
    bucket.put("bkt", "ds/README", b"keep me too")
    small = make_index_dataset(tmp_path / "small", n=16, shard_size=8)  # another copy: its own journal, no shards 2, 3
    report = push(small.root, URL)
    after = keys(bucket)
    assert after["ds/vocab/theirs/notes.txt"] == b"keep me" and after["ds/README"] == b"keep me too"
    assert not any(k.startswith(("ds/shards/00002", "ds/shards/00003", "ds/masks/")) for k in after)
    assert report.foreign == ("README", "vocab/theirs/notes.txt") and report.removed >= 2 + 10 + 1
    assert set(json.loads(after[f"ds/{LEDGER}"])["objects"]) == {k[3:] for k in after} - {
        "README",
        "vocab/theirs/notes.txt",
        LEDGER,
        fmt.MANIFEST,
    }
    shown = CliRunner().invoke(cli, ["push", str(small.root), URL])
    assert shown.exit_code == 0 and "left alone: 2 object(s)" in shown.output, shown.output


def test_a_push_of_an_older_tagstream_is_recognised_by_its_manifest(bucket, tmp_path):
    """No ledger and no journal (a push by an older tagstream, from another machine): the objects its tagstream
    manifest names are ours to replace; a vocabulary it does not name is left alone."""
    old = make_index_dataset(tmp_path / "old", n=24, shard_size=8)
    push(old.root, URL)
    storage.remove(f"{URL}/{LEDGER}")
    new = make_index_dataset(tmp_path / "new", n=8, shard_size=8)
    report = push(new.root, URL)
    after = keys(bucket)
    assert not any(k.startswith(("ds/shards/00001", "ds/shards/00002", "ds/index/00002")) for k in after)
    assert report.foreign == ()  # the vocabulary's files have the same names in both: overwritten, not foreign
    assert (tmp_path / "new" / JOURNAL_DIR).is_dir()


@pytest.mark.parametrize(
    "rel", ["../x", "vocab/../../x", "/etc/passwd", "vocab/v/./labels.npy", "vocab//v", "a\\..\\b", "vocab/v\n", ""]
)
def test_key_problem_refuses_every_path_like_key(rel, tmp_path):
    assert key_problem(rel) is not None
    with pytest.raises(fmt.FormatError, match="refused"):
        local_file(tmp_path, rel)


def test_a_link_in_the_cache_cannot_lead_a_key_outside(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "vocab").symlink_to(tmp_path / "elsewhere")
    assert key_problem("vocab/v/labels.npy") is None
    with pytest.raises(fmt.FormatError, match="resolves outside the cache directory"):
        local_file(tmp_path / "cache", "vocab/v/labels.npy")


@pytest.mark.parametrize("folder", [fmt.VOCAB_DIR, fmt.MASKS_DIR])
def test_keys_with_dot_dot_never_write_or_delete_outside_the_cache(bucket, tmp_path, folder):
    ds = make_index_dataset(tmp_path / "ds", n=16, shard_size=8)
    push(ds.root, URL)
    cache = tmp_path / "a" / "b" / "cache"
    outside = tmp_path / "a" / "victim.npy"
    outside.parent.mkdir(parents=True)
    outside.write_bytes(b"a file that was there before")
    up = "../" * 4  # from cache/NAME-HASH/folder/ to a/
    hostile = {f"ds/{folder}/{up}victim.npy", f"ds/{folder}/v/../{up}victim.npy", f"ds/{folder}/{up}new.npy"}
    for key in hostile:
        bucket.put("bkt", key, b"written by the bucket")
    remote = Dataset(URL, cache_dir=cache)
    assert remote.vocab_names() == ["v"] and remote.mask_names() == []
    remote.mirror.fetch_all()
    assert outside.read_bytes() == b"a file that was there before" and not (tmp_path / "a" / "new.npy").exists()

    # a mirror state written by an older tagstream that took such keys in: reopening must not delete outside
    state = json.loads((remote.root / SOURCE).read_text())
    state["files"].update({k[3:]: "1:old" for k in hostile})
    (remote.root / SOURCE).write_text(json.dumps(state))
    Mirror.open(URL, cache)
    assert outside.read_bytes() == b"a file that was there before"
    verified = CliRunner(env={"XDG_CACHE_HOME": str(tmp_path / "xdg")}).invoke(cli, ["verify", URL])
    assert verified.exit_code == 0, verified.output
    assert outside.read_bytes() == b"a file that was there before" and not (tmp_path / "a" / "new.npy").exists()
