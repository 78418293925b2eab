"""WebDataset tars as a conversion source: grouping by key, fields, img2dataset rejects, damaged tars, input
lists (file, folder, glob, braces), and enumeration from any position."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tagstream.tools.convert.inputs import Source, detect_format
from tagstream.tools.convert.inputs.paths import braceexpand
from tests.helpers.webdataset import add_member, image_bytes, item_image, sample_members, write_tar


def items(src, fmt="auto", **options) -> list:
    source = Source(src, fmt, **options)
    source.scan()
    return list(source.items())


def summary(item) -> tuple:
    return (item.pos, item.reason if item.error else "ok", item.tags, item.source)


def test_samples_grouped_by_key_with_fields(tmp_path):
    jpg = image_bytes(1)[1]
    members = [
        ("a/000.jpg", jpg),
        ("a/000.json", json.dumps({"tags": "x, y  z", "id": 7}).encode()),
        ("a/000.txt", b"seen #Sunset"),
        ("a/001.seg.png", b"ignored: not an image extension we take"),
        ("a/001.png", image_bytes(5)[1]),
        ("a/001.json", json.dumps({"tags": ["p"], "caption": "#fromjson"}).encode()),
        ("b/000.jpg", jpg),  # same basename in another folder: another key
    ]
    got = items(write_tar(tmp_path / "s.tar", members))
    assert [summary(i) for i in got] == [
        (0, "ok", ("x", "y", "z", "Sunset"), "a/000"),
        (1, "ok", ("p", "fromjson"), "a/001"),
        (2, "ok", (), "b/000"),
    ]
    assert (
        item_image(got[0]) == jpg
        and got[0].member is not None
        and got[0].image == "s.tar:a/000.jpg"
        and got[1].image.endswith(".png")
    )
    by_id = items(tmp_path / "s.tar", id_field="id")
    assert [i.reason for i in by_id[1:]] == ["bad_metadata", "bad_metadata"]  # no id in the JSON: refused
    assert by_id[0].source == "7"


def test_img2dataset_rejects(tmp_path):
    members = sample_members(0) + [
        ("000001.json", json.dumps({"status": "failed_to_download", "error_message": "HTTP 404"}).encode()),
        ("000002.txt", b"a caption but no picture"),
        ("000003.jpg", b""),
        ("000004.jpg", image_bytes(4)[1]),
        ("000004.json", b"{not json"),
        ("000005.jpg", image_bytes(5)[1]),
        ("000005.json", json.dumps({"tags": [1, 2]}).encode()),
    ]
    got = items(write_tar(tmp_path / "r.tar", members))
    assert [(i.reason if i.error else "ok") for i in got] == [
        "ok",
        "download_failed",
        "no_image",
        "ok",
        "bad_metadata",
        "bad_metadata",
    ]
    assert "HTTP 404" in got[1].error and ".txt" in got[2].error
    assert item_image(got[3]) == b""  # an empty member; validation rejects it as empty_file
    assert items(tmp_path / "r.tar", status_field="")[1].reason == "no_image"  # status not looked at


def _tar_offsets(path: Path) -> list[int]:
    with tarfile.open(path) as tf:
        return [m.offset for m in tf.getmembers()]


@pytest.mark.parametrize("damage", ["truncated_data", "truncated_header", "garbage_header", "not_a_tar", "empty"])
def test_damaged_tar_rejects_the_rest(tmp_path, damage):
    good = write_tar(tmp_path / "good.tar", [m for i in range(4) for m in sample_members(i)])
    data = bytearray(good.read_bytes())
    offsets = _tar_offsets(good)
    with tarfile.open(good) as tf:
        names = tf.getnames()
    image2 = offsets[names.index("000002.jpg")]
    json2 = offsets[names.index("000002.json")]  # sample 2's second member
    if damage == "truncated_data":
        data = data[: image2 + 512 + 100]  # inside the data of sample 2's image
    elif damage == "truncated_header":
        data = data[: json2 + 300]
    elif damage == "garbage_header":
        data[json2 : json2 + 512] = b"\x07" * 512
    elif damage == "not_a_tar":
        data = bytearray(b"this is not a tar file at all" * 40)
    else:
        data = bytearray()
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    source = Source(bad)
    count, _ = source.scan()
    got = list(source.items())
    assert len(got) == count and [i.pos for i in got] == list(range(count))
    kinds = [i.reason if i.error else "ok" for i in got]
    if damage in ("not_a_tar", "empty"):
        assert kinds == ["damaged_file"]
    else:  # samples 0 and 1 are whole; sample 2 was being read when the damage began, so it is not trusted
        assert kinds == ["ok", "ok", "damaged_file"], kinds
    assert all(i.error for i in got if i.reason == "damaged_file" and i.error)


def test_input_lists_and_missing_tar_of_a_pattern(tmp_path):
    for t in range(3):
        write_tar(tmp_path / f"{t:05d}.tar", sample_members(t))
    (tmp_path / "notes.txt").write_text("not a tar")
    assert braceexpand("s/{00008..00011}.tar") == [f"s/{i:05d}.tar" for i in range(8, 12)]
    assert braceexpand("{a,b}{1..2}") == ["a1", "a2", "b1", "b2"]
    folder = [i.source for i in items(tmp_path)]
    assert folder == ["000000", "000001", "000002"]
    assert [i.source for i in items(str(tmp_path / "0000[12].tar"), "tar")] == ["000001", "000002"]
    braces = items(str(tmp_path / "{00002..00003}.tar"), "tar")
    assert [summary(i)[:2] for i in braces] == [(0, "ok"), (1, "missing_file")]
    assert detect_format(tmp_path) == "tar" and detect_format(str(tmp_path / "*.tar")) == "tar"
    with pytest.raises(ValueError, match="no file matches"):
        Source(str(tmp_path / "*.tar.gz"), "tar").scan()
    with pytest.raises(ValueError, match="needs --format"):
        Source(str(tmp_path / "{0,1}"))


def test_items_from_any_position(tmp_path):
    """items(start) is items() cut at start, for every start: resume and parts rely on it."""
    write_tar(tmp_path / "00000.tar", [m for i in range(3) for m in sample_members(i)])
    data = write_tar(tmp_path / "00001.tar", [m for i in range(3, 8) for m in sample_members(i)]).read_bytes()
    (tmp_path / "00001.tar").write_bytes(data[: len(data) - 3000])  # damaged near its end
    write_tar(tmp_path / "00002.tar", [m for i in range(8, 10) for m in sample_members(i)])
    spec = str(tmp_path / "{00000..00003}.tar")
    source = Source(spec, "tar")
    count, fingerprint = source.scan()
    everything = [summary(i) for i in source.items()]
    assert len(everything) == count
    for start in range(count + 1):
        assert [summary(i) for i in source.items(start)] == everything[start:]
    other = Source(spec, "tar")  # a part converted elsewhere: the driver's scan state, no scan of its own
    other.load_scan_state(json.loads(json.dumps(source.scan_state())))
    assert [summary(i) for i in other.items(4)] == everything[4:]
    assert Source(spec, "tar").scan() == (count, fingerprint)


def test_tars_scanned_in_parallel_give_the_one_at_a_time_scan(tmp_path):
    """Tars are scanned several at once (their reads overlap), each tar's digest fed in file order: the same
    counts, damage and fingerprint as one tar at a time."""
    import hashlib

    from tagstream.tools.convert.inputs.tar_shards import scan_tar

    for t in range(7):
        data = write_tar(
            tmp_path / f"{t:05d}.tar", [m for i in range(t, t + 3) for m in sample_members(i)]
        ).read_bytes()
        if t == 3:
            (tmp_path / f"{t:05d}.tar").write_bytes(data[: len(data) - 3000])
    spec = str(tmp_path / "{00000..00007}.tar")  # 00007 is missing
    h = hashlib.sha256()
    reference = []
    for t in range(8):  # the sequential scan
        own = hashlib.sha256()
        reference.append(scan_tar(str(tmp_path / f"{t:05d}.tar"), own))
        h.update(own.digest())
    for threads in (1, 3, 16):
        source = Source(spec, "tar")
        count, fingerprint = source.reader.scan(threads=threads)
        assert source.reader.tars == reference and fingerprint == h.hexdigest()
        assert count == sum(t.inputs for t in reference)


def test_compressed_tars_are_streamed(tmp_path):
    import gzip

    plain = write_tar(tmp_path / "p.tar", [m for i in range(6) for m in sample_members(i)])
    packed = gzip.compress(plain.read_bytes())
    (tmp_path / "z.tar.gz").write_bytes(packed)
    (tmp_path / "cut.tgz").write_bytes(packed[: len(packed) * 2 // 3])
    same = [(i.pos, i.tags, item_image(i)) for i in items(plain)]
    assert [(i.pos, i.tags, i.data) for i in items(tmp_path / "z.tar.gz")] == same  # streamed: bytes carried
    source = Source(tmp_path / "z.tar.gz")
    source.scan()
    assert [(i.pos, i.tags, i.data) for i in source.items(4)] == same[4:]
    cut = items(tmp_path / "cut.tgz")
    assert cut[-1].reason == "damaged_file" and all(i.error is None for i in cut[:-1]) and len(cut) < 6


def test_fingerprint_follows_the_members(tmp_path):
    path = write_tar(tmp_path / "a.tar", sample_members(0))
    before = Source(path).scan()
    with tarfile.open(path, "a") as tf:
        add_member(tf, "000009.jpg", image_bytes(9)[1])
    after = Source(path).scan()
    assert after[0] == before[0] + 1 and after[1] != before[1]
