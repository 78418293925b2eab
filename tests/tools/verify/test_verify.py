"""`tagstream verify`: each kind of damage is caught and named; a clean dataset passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.tools.cli import main
from tagstream.tools.verify.checks import verify


@pytest.fixture
def ds(tiny_dataset) -> Path:
    return tiny_dataset(12, shard_size=5)  # shards 00000 (5), 00001 (5), 00002 (2)


def edit_manifest(root: Path, change) -> None:
    manifest = json.loads((root / fmt.MANIFEST).read_text())
    change(manifest)
    (root / fmt.MANIFEST).write_text(json.dumps(manifest))


def rewrite_record(root: Path, shard: str, key: int, value: bytes) -> None:
    """Replace a record and re-record the shard's checksum: damage only the structure checks can see."""

    env = fmt.open_env(fmt.shard_path(root, shard), write=True)
    with env.begin(write=True) as txn:
        txn.put(fmt.encode_key(key), value)
    env.close()
    data = fmt.shard_path(root, shard) / "data.mdb"

    def fix(m):
        for s in m["shards"]:
            if s["name"] == shard:
                s["bytes"], s["sha256"] = data.stat().st_size, fmt.file_sha256(data)

    edit_manifest(root, fix)


def test_clean_dataset_passes(ds):
    report = verify(ds)
    assert report.ok, report.problems
    assert (report.shards, report.images) == (3, 12)
    assert report.bytes == sum(s["bytes"] for s in Dataset(ds).shards)


def only_problem(root: Path, shard: str | None, *words: str) -> None:
    report = verify(root)
    assert not report.ok
    assert report.damaged_shards == ([shard] if shard else [])
    text = " | ".join(map(str, report.problems))
    for w in words:
        assert w in text, text


def test_flipped_byte(ds):
    data = fmt.shard_path(ds, "00001") / "data.mdb"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    only_problem(ds, "00001", "checksum mismatch")


def test_missing_shard(ds):
    import shutil

    shutil.rmtree(fmt.shard_path(ds, "00002"))
    only_problem(ds, "00002", "missing shard")


def test_truncated_shard(ds):
    data = fmt.shard_path(ds, "00000") / "data.mdb"
    data.write_bytes(data.read_bytes()[:-100])
    only_problem(ds, "00000", "truncated")


def test_count_mismatch(ds):
    def more(m):
        m["shards"][1]["images"] += 1
        m["images"] += 1

    edit_manifest(ds, more)
    only_problem(ds, "00001", "count mismatch", "holds 5 records, manifest says 6")


def test_total_count_mismatch(ds):
    edit_manifest(ds, lambda m: m.update(images=13))
    only_problem(ds, None, "count mismatch: manifest says 13 images, its shards hold 12")


def test_unknown_format_version(ds):
    edit_manifest(ds, lambda m: m.update(version=99))
    only_problem(ds, None, "format version 99 is not known")
    with pytest.raises(fmt.FormatError, match="format version 99 is not known to this tagstream"):
        Dataset(ds)


def test_missing_and_truncated_index(ds):
    fmt.index_path(ds, "00000", "phash").unlink()
    p = fmt.index_path(ds, "00002", "tag_ids")
    p.write_bytes(p.read_bytes()[:60])
    report = verify(ds)
    assert report.damaged_shards == ["00000", "00002"]
    text = " | ".join(map(str, report.problems))
    assert "missing index file 00000.phash.npy" in text and "00002.tag_ids.npy is unreadable" in text


def test_index_length_mismatch(ds):
    fmt.save_npy_atomic(fmt.index_path(ds, "00001", "width"), np.zeros(4, "<i4"))
    only_problem(ds, "00001", "index width has 4 entries, manifest says 5")


def test_unparsable_record(ds):
    rewrite_record(ds, "00001", 3, b"\xc1 not msgpack")
    only_problem(ds, "00001", "record 3", "msgpack")


def test_tag_id_out_of_range(ds):
    rewrite_record(ds, "00000", 0, fmt.pack_record(b"\xff\xd8\xff", [999], "x"))
    only_problem(ds, "00000", "record 0: tag ids [999] out of range")


def test_record_disagrees_with_index(ds):
    rewrite_record(ds, "00002", 1, fmt.pack_record(b"\xff\xd8\xff", [0], "x"))
    only_problem(ds, "00002", "record 1: tags [0] differ from the index")


def test_wrong_digest(ds):
    """An index digest that is not its image's, its checksum re-recorded (an edited index): the record pass names it."""
    path = fmt.index_path(ds, "00001", "digest")
    digests = np.load(path)
    digests[2] ^= np.uint64(1)
    fmt.save_npy_atomic(path, digests)

    def rerecord(m):
        m["shards"][1]["index"]["digest"] = fmt.file_sha256(path)

    edit_manifest(ds, rerecord)
    only_problem(ds, "00001", "record 2: index digest", "is not the image's")
    assert [str(p) for p in verify(ds, deep=True).problems] == [str(p) for p in verify(ds).problems]


def test_a_dataset_without_digests_passes(ds):
    """Converted before digests were stored: nothing to check them against, nothing wrong."""

    def forget(m):
        for s in m["shards"]:
            fmt.index_path(ds, s["name"], "digest").unlink()
            del s["index"]["digest"]

    edit_manifest(ds, forget)
    report = verify(ds)
    assert report.ok, report.problems
    assert report.images == 12


def test_missing_tags_table(ds):
    (ds / fmt.TAGS).unlink()
    only_problem(ds, None, "missing tags.tsv")


def test_cli_verify(ds):
    runner = CliRunner()
    res = runner.invoke(main, ["verify", str(ds)])
    assert res.exit_code == 0 and "OK: 3 shards, 12 images" in res.output
    data = fmt.shard_path(ds, "00002") / "data.mdb"
    data.write_bytes(data.read_bytes()[:-1])
    res = runner.invoke(main, ["verify", str(ds)])
    assert res.exit_code == 1
    assert "DAMAGED shard 00002: truncated" in res.output and "damaged: 00002" in res.output
    res = runner.invoke(main, ["verify", "--help"])
    assert "Example" in res.output and "tagstream verify" in res.output


def test_workers_give_the_same_report_as_one_process(ds):
    """Shards checked in parallel processes: the same counts and the same problems, in shard order."""
    data = fmt.shard_path(ds, "00001") / "data.mdb"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    (fmt.shard_path(ds, "00002") / "data.mdb").unlink()
    one, three = verify(ds), verify(ds, workers=3)
    assert (three.shards, three.images, three.bytes) == (one.shards, one.images, one.bytes) == (3, 5, one.bytes)
    assert three.problems == one.problems and three.damaged_shards == ["00001", "00002"]
    with pytest.raises(ValueError, match="workers"):
        verify(ds, workers=0)
    res = CliRunner().invoke(main, ["verify", str(ds), "--workers", "2"])
    assert res.exit_code == 1 and "00001" in res.output and "00002" in res.output
