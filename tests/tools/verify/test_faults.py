"""`tagstream verify` under fault injection: structural damage under a manifest rewritten to match (so the
checksum cannot see it) is reported, never a crash; `--deep` finds the images that `train` could not
decode; vocabularies and masks are checked entry by entry."""

from __future__ import annotations

import faulthandler
import json
import os
import shutil
import signal

import numpy as np
import pytest
from click.testing import CliRunner

from tagstream.loader.data import format as fmt
from tagstream.tools.cli import main
from tagstream.tools.verify import records
from tagstream.tools.verify.checks import verify
from tests.helpers.damage import (
    corrupt_scan,
    data_file,
    extraneous_before_eoi,
    flip_bytes,
    forge_size,
    inflate_record_size,
    put_record,
    rewrite_digest,
    rewrite_manifest,
    small_jpeg,
    truncate,
)
from tests.helpers.tiny import TinyDatasets


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return TinyDatasets(tmp_path_factory)(12, shard_size=5)  # shards 00000 (5), 00001 (5), 00002 (2)


@pytest.fixture
def ds(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "ds")


def _damage(root, kind: str) -> None:
    data = data_file(root, "00001")
    size = data.stat().st_size
    if kind == "truncated_one_page":
        truncate(data, size - 4096)
    elif kind == "truncated_to_meta":
        truncate(data, 8192)
    elif kind == "empty_file":
        truncate(data, 0)
    elif kind == "zeroed_meta_pages":
        with open(data, "r+b") as f:
            f.write(bytes(8192))
    elif kind == "leaf_page_header":
        flip_bytes(data, 8192, 16)
    elif kind == "record_size":
        inflate_record_size(root, "00001", 2)
    elif kind == "deleted_record":
        put_record(root, "00001", 4, None)
    elif kind == "garbage_file":
        data.write_bytes(os.urandom(size))
    rewrite_manifest(root, "00001")


DAMAGE = [
    "truncated_one_page",
    "truncated_to_meta",
    "empty_file",
    "zeroed_meta_pages",
    "leaf_page_header",
    "record_size",
    "deleted_record",
    "garbage_file",
]


@pytest.mark.parametrize("kind", DAMAGE)
def test_structural_damage_under_a_matching_manifest_is_reported(ds, kind):
    """Was: SIGBUS, lmdb.PageNotFoundError or lmdb.CorruptedError out of `verify` itself."""
    _damage(ds, kind)
    report = verify(ds)
    assert report.damaged_shards == ["00001"], report.problems
    assert report.images == 7  # the other shards were checked in full


@pytest.mark.parametrize("kind", ["truncated_one_page", "record_size", "garbage_file"])
def test_the_cli_exits_1_with_the_damage_named(ds, kind):
    _damage(ds, kind)
    res = CliRunner().invoke(main, ["verify", str(ds)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert "DAMAGED shard 00001:" in res.output and "damaged: 00001" in res.output


def test_a_reader_killed_by_a_signal_is_a_problem_not_the_end_of_verify(ds, monkeypatch):
    """The record pass runs in a child: damage LMDB does not catch (it trusts its page pointers) kills
    the child, and verify names the shard and goes on."""
    real = records.walk_records

    def dies_on_shard_1(root, name, *args):
        if name == "00001":
            faulthandler.disable()  # pytest's handler, inherited by the fork: its dump would read as a real crash
            os.kill(os.getpid(), signal.SIGBUS)
        return real(root, name, *args)

    monkeypatch.setattr(records, "walk_records", dies_on_shard_1)
    report = verify(ds)
    assert report.damaged_shards == ["00001"]
    assert "killed the reader (signal SIGBUS)" in str(report.problems[0])
    assert report.images == 7


def _record(root, i: int, image: bytes) -> bytes:
    """Image i's record with other image bytes (its tags and source kept)."""
    from tagstream.loader.data.store import ShardStore, close_all

    rec = ShardStore(root).read(i)
    close_all()  # put_record opens the shard for writing next
    return fmt.pack_record(image, rec["tags"], rec["source"])


@pytest.mark.parametrize(
    "image, fast, found",
    [
        (
            b"\xff\xd8" + bytes(700),
            True,
            "JPEG has no frame header",
        ),  # passed `verify`, failed `train` in a DALI worker
        (forge_size(small_jpeg(64, 48), 65500, 65500), True, "JPEG header says 65500 x 65500, the index says 64 x 48"),
        (small_jpeg(80, 48), True, "JPEG header says 80 x 48, the index says 64 x 48"),
        (corrupt_scan(small_jpeg(64, 48)), False, "JPEG Corrupt JPEG data"),  # only decoding finds it
        (
            extraneous_before_eoi(small_jpeg(64, 48)),
            False,
            "JPEG Corrupt JPEG data: 38 extraneous bytes before marker 0xd9",
        ),
    ],
    ids=["soi_and_zeros", "bomb_header", "size_differs", "corrupt_scan", "extraneous_before_eoi"],
)
def test_images_that_do_not_decode_are_found(ds, image, fast, found):
    put_record(ds, "00001", 2, _record(ds, 7, image))
    rewrite_digest(ds, "00001", 2, image)  # stored so at conversion: the digest agrees, only the image's checks tell
    quick = verify(ds)
    assert quick.ok != fast, quick.problems  # the fast pass reads headers from their markers, it does not decode
    report = verify(ds, deep=True)
    assert report.damaged_shards == ["00001"]
    assert f"record 2: {found}" in str(report.problems[0]), report.problems
    res = CliRunner().invoke(main, ["verify", str(ds), "--deep"])
    assert res.exit_code == 1 and "DAMAGED shard 00001: record 2:" in res.output


def test_deep_passes_a_clean_dataset(ds):
    res = CliRunner().invoke(main, ["verify", str(ds), "--deep"])
    assert res.exit_code == 0 and "OK: 3 shards, 12 images" in res.output and "every image decoded" in res.output


@pytest.mark.parametrize("width", [100000, 0, -5])
def test_impossible_index_sizes_are_found_by_the_fast_pass(ds, width):
    a = np.load(fmt.index_path(ds, "00002", "width"))
    a[1] = width
    np.save(fmt.index_path(ds, "00002", "width"), a)
    report = verify(ds)
    assert report.damaged_shards == ["00002"] and f"image 1 has width {width}" in str(report.problems[0])


def test_vocabulary_and_mask_damage_is_reported(ds):
    from tagstream.loader.data.writer import write_mask
    from tagstream.tools.vocab.build import VocabOptions, build_vocab

    build_vocab(ds, "v", VocabOptions(min_count=1))
    write_mask(ds, "m", np.zeros(12, bool))
    assert verify(ds).ok
    labels = np.load(ds / "vocab/v/labels.npy")
    labels[3] = 999
    np.save(ds / "vocab/v/labels.npy", labels)
    np.save(ds / "masks/m.npy", np.zeros(11, bool))
    text = " | ".join(map(str, verify(ds).problems))
    assert "vocabulary v: labels are not a CSR of class ids in [0, " in text
    assert "mask m.npy: bool (11,), expected bool (12,)" in text


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"format": "tagstream", "version": 1, "images": 1e30, "shards": []}',
        '{"format": "tagstream", "version": 1, "images": 0, "shards": null}',
        '{"format": "tagstream", "version": 1, "images": 100000000000000000000000, "shards": []}',  # > int64
        "[" * 100_000 + "]" * 100_000,  # nested 10^5 deep: was a RecursionError out of verify
    ],
)
def test_malformed_manifest_is_a_problem(ds, text):
    (ds / fmt.MANIFEST).write_text(text)
    report = verify(ds)
    assert not report.ok and str(ds / fmt.MANIFEST) in str(report.problems[0])


def test_undecodable_tag_table_is_a_problem(ds):
    (ds / fmt.TAGS).write_bytes(b"id\ttag\tcount\n0\t\xff\xfe\t3\n")
    assert "tags.tsv is unreadable (UnicodeDecodeError" in " | ".join(map(str, verify(ds).problems))


def test_manifest_entry_without_bytes_is_reported(ds):
    manifest = json.loads((ds / fmt.MANIFEST).read_text())
    del manifest["shards"][0]["bytes"]
    (ds / fmt.MANIFEST).write_text(json.dumps(manifest))
    report = verify(ds)
    assert report.damaged_shards == ["00000"] and "no byte size" in str(report.problems[0])


@pytest.mark.parametrize(
    "damage, found",
    [
        (
            lambda t: t.replace("\n0\tall\t", "\n0 all ", 1),
            "classes.tsv line 2: not 'id<TAB>name<TAB>count<TAB>members'",
        ),
        (lambda t: t[: len(t) - 5], "cut short (no line end)"),
        (lambda t: "".join(t.splitlines(True)[:-1]), "classes, but vocab.json says"),
        (lambda t: t.replace("\n1\t", "\n7\t", 1), "classes.tsv line 3:"),
        (lambda t: t.replace("\tall\t12\t", "\tall\t11\t", 1), "class count(s) in classes.tsv differ from the labels"),
        (lambda t: t.replace("id\tname", "id name"), "classes.tsv line 1: not the header"),
        (lambda t: t.encode("utf-16").decode("latin-1"), "classes.tsv"),
    ],
)
def test_a_garbled_or_cut_class_table_is_reported(ds, damage, found):
    from tagstream.tools.vocab.build import VocabOptions, build_vocab

    build_vocab(ds, "v", VocabOptions(min_count=1))
    path = ds / "vocab/v/classes.tsv"
    path.write_text(damage(path.read_text()), encoding="utf-8" if "utf" not in found else "latin-1")
    problems = " | ".join(map(str, verify(ds).problems))
    assert "vocabulary v: " in problems and found in problems, problems


def test_label_offsets_and_vocab_sizes_that_disagree_are_reported(ds):
    from tagstream.tools.vocab.build import VocabOptions, build_vocab

    build_vocab(ds, "v", VocabOptions(min_count=1))
    off = np.load(ds / "vocab/v/label_offsets.npy")
    off[4], off[5] = off[5], off[4]  # no longer non-decreasing
    np.save(ds / "vocab/v/label_offsets.npy", off)
    assert "labels are not a CSR" in " | ".join(map(str, verify(ds).problems))
    np.save(ds / "vocab/v/label_offsets.npy", off[:-1])  # one image short
    assert "label_offsets.npy is int64 (12,), expected int64 (13,)" in " | ".join(map(str, verify(ds).problems))
