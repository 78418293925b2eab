"""YFCC100M metadata as a conversion source: both layouts, plain and bz2, tag decoding, videos, the join to a
folder of images (by id or hash) or to img2dataset tars, positions past a remembered offset; the folder's
streamed listing in sorted() order and its fingerprint pinned."""

from __future__ import annotations

import bz2
import json
import os

import pytest

from tagstream.tools.convert.engine import convert
from tagstream.tools.convert.inputs import Source, yfcc
from tagstream.tools.convert.inputs.yfcc import walk_sorted
from tests.helpers.s3server import _moto_server, s3_server  # noqa: F401 - fixtures
from tests.helpers.webdataset import image_bytes, item_image, write_tar


def yfcc_line(i: int, *, layout: int = 25, video: bool = False) -> str:
    """One dataset line of photo 5000+i: user tags 'sun,new+york,caf%C3%A9<i>', machine tag 'vision:outdoor'."""
    cols = [
        str(5000 + i),
        f"{i:032x}",
        "12345@N00",
        "nick",
        "2010-01-01 00:00:00.0",
        "1262304000",
        "Canon",
        "title",
        "description",
        f"sun,new+york,caf%C3%A9{i}",
        "vision%3Aoutdoor",
        "",
        "",
        "",
        "http://www.flickr.com/photos/x/1/",
        "http://farm1.staticflickr.com/1/1_x.jpg",
        "CC BY",
        "http://creativecommons.org/licenses/by/2.0/",
        "1",
        "1",
        "secret",
        "osecret",
        "jpg",
        "1" if video else "0",
    ]
    if layout == 25:
        cols.insert(0, str(i))
    else:
        del cols[1]  # the 23-column layout has neither the line number nor the hash
    return "\t".join(cols)


def write_images(folder, ids, *, by_hash=()):
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        name = f"{i:032x}" if i in by_hash else str(5000 + i)
        ext, data = image_bytes(i)
        (folder / "deep" / name[:2]).mkdir(parents=True, exist_ok=True)
        (folder / "deep" / name[:2] / f"{name}.{ext}").write_bytes(data)


@pytest.mark.parametrize("layout", [25, 23])
def test_layouts_tags_videos_and_join(tmp_path, layout):
    lines = [yfcc_line(i, layout=layout, video=i == 2) for i in range(6)] + ["short\tline"]
    (tmp_path / "meta.tsv").write_text("\n".join(lines) + "\n\n")
    write_images(tmp_path / "images", [0, 1, 2, 3, 5], by_hash=(5,))
    source = Source(tmp_path / "meta.tsv", "yfcc", images=str(tmp_path / "images"), yfcc_machine_tags=True)
    count, _ = source.scan()
    got = list(source.items())
    kinds = [i.reason if i.error else "ok" for i in got]
    # photo 4 has no image; photo 5's file is named by its hash, which only the 25-column layout carries
    assert count == 7 and kinds == [
        "ok",
        "ok",
        "video",
        "ok",
        "missing_file",
        "ok" if layout == 25 else "missing_file",
        "bad_metadata",
    ]
    assert got[0].tags == ("sun", "new york", "café0", "vision:outdoor") and got[0].source == "5000"
    assert source.describe()["images_kind"] == "dir" and source.reader.layout == layout


def test_bz2_marks_and_tar_images(tmp_path, monkeypatch):
    monkeypatch.setattr(yfcc, "MARK_EVERY", 3)  # remembered offsets every 3 lines
    text = "\n".join(yfcc_line(i) for i in range(10)) + "\n"
    (tmp_path / "meta.tsv").write_text(text)
    (tmp_path / "meta.bz2").write_bytes(bz2.compress(text.encode()))
    members = []
    for i in (7, 3, 1, 0):  # tar order differs from the table's
        ext, data = image_bytes(i)
        members += [(f"{i:05d}.{ext}", data), (f"{i:05d}.json", json.dumps({"photoid": 5000 + i}).encode())]
    write_tar(tmp_path / "images.tar", members)
    runs = []
    for meta in ("meta.tsv", "meta.bz2"):
        source = Source(tmp_path / meta, "yfcc", images=str(tmp_path / "images.tar"), id_field="photoid")
        count, _ = source.scan()
        every = [(i.pos, i.line, i.error, item_image(i)) for i in source.items()]
        for start in range(count + 1):
            assert [(i.pos, i.line, i.error, item_image(i)) for i in source.items(start)] == every[start:]
        runs.append(every)
    assert runs[0] == runs[1] and len(source.reader.marks) == 0  # bz2 is read from its start
    assert [e is None for _, _, e, _ in runs[0]] == [i in (0, 1, 3, 7) for i in range(10)]
    assert runs[0][3][3] == image_bytes(3)[1]
    summary = convert(
        tmp_path / "meta.bz2", tmp_path / "ds", format="yfcc", images=str(tmp_path / "images.tar"), id_field="photoid"
    )
    assert (summary.images, summary.rejected) == (4, {"missing_file": 6})
    with pytest.raises(ValueError, match="--id-field"):
        Source(tmp_path / "meta.tsv", "yfcc", images=str(tmp_path / "images.tar"))
    with pytest.raises(ValueError, match="needs --images"):
        Source(tmp_path / "meta.tsv", "yfcc")


def test_convert_yfcc_end_to_end(tmp_path):
    (tmp_path / "meta.tsv").write_text("\n".join(yfcc_line(i, video=i == 1) for i in range(4)) + "\n")
    write_images(tmp_path / "images", [0, 1, 3])
    summary = convert(tmp_path / "meta.tsv", tmp_path / "ds", format="yfcc", images=str(tmp_path / "images"))
    assert (summary.images, summary.rejected) == (2, {"missing_file": 1, "video": 1})
    assert summary.manifest["source"]["images_kind"] == "dir"
    (tmp_path / "bad.tsv").write_text("a\tb\tc\n")
    with pytest.raises(ValueError, match="has 3 tab-separated columns"):
        convert(tmp_path / "bad.tsv", tmp_path / "ds2", format="yfcc", images=str(tmp_path / "images"))


# names whose sorted() order differs from a per-folder sort by name: '-' < '.' < '/' < '0', spaces, capitals
AWKWARD = [
    "abc",
    "a.jpg",
    "a0.jpg",
    "a/b.jpg",
    "a/5000.png",
    "ab/c",
    "a-b/5001.jpg",
    "a b/5008.jpg",
    "A.jpg",
    "deep/50/5000.jpg",
    "deep/50/5002.png",
    "deep/50/.5003.jpg",
    ".hidden/5003.jpg",
    "x/y/z/5003.jpg",
    "é/5004.jpg",
    "日本/5005.jpg",
    "a/b/c/5007.jpg",
    "0000000000000000000000000000000a.jpg",
]


def awkward_folder(root):
    """AWKWARD (file n holds n+1 bytes n), an empty folder, a name that is not UTF-8, a linked folder (not
    walked) and a linked file (listed with its target's size)."""
    for n, rel in enumerate(AWKWARD):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(bytes([n]) * (n + 1))
    (root / "empty").mkdir()
    with open(os.path.join(os.fsencode(root), b"\xff5009.jpg"), "wb") as f:
        f.write(b"zz")
    os.symlink(root / "deep", root / "linkdir")
    os.symlink(root / "a.jpg", root / "deep" / "5006.jpg")
    return root


def walk_then_sort(local):
    """The listing as it was: everything os.walk finds, hidden names skipped, then sorted (the oracle)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(local):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                full = os.path.join(dirpath, name)
                out.append((os.path.relpath(full, local).replace(os.sep, "/"), os.stat(full).st_size))
    return sorted(out)


def test_streamed_listing_is_sorted_like_the_whole_listing(tmp_path):
    root = awkward_folder(tmp_path / "images")
    listed = list(walk_sorted(str(root)))
    assert listed == walk_then_sort(root) and len(listed) == len(AWKWARD)  # 2 hidden; a link, a non-UTF-8 name
    rels = [rel for rel, _ in listed]
    assert rels[:5] == ["0000000000000000000000000000000a.jpg", "A.jpg", "a b/5008.jpg", "a-b/5001.jpg", "a.jpg"]
    assert rels.index("a.jpg") < rels.index("a/b.jpg") < rels.index("a0.jpg") < rels.index("ab/c") < rels.index("abc")
    assert list(walk_sorted(str(root / "empty"))) == [] and list(walk_sorted(str(root / "absent"))) == []


def test_folder_join_and_its_fingerprint_are_unchanged(tmp_path):
    (tmp_path / "meta.tsv").write_text("\n".join(yfcc_line(i) for i in range(12)) + "\n")
    images = awkward_folder(tmp_path / "images")
    source = Source(tmp_path / "meta.tsv", "yfcc", images=str(images))
    # the value the folder's fingerprint had before the listing was streamed: interrupted conversions resume
    assert source.scan() == (12, "2:2fe056d1e35f03cea46b297610e878647f78119e5c28616e714d6ab536c3cd9c")
    found = [i.image and os.path.relpath(i.image, images) for i in source.items()]
    # 5000: the first of its two files in path order; 5006: a linked file; 5010: by hash; 5009's name is not UTF-8
    assert found == [
        "a/5000.png",
        "a-b/5001.jpg",
        "deep/50/5002.png",
        "x/y/z/5003.jpg",
        "é/5004.jpg",
        "日本/5005.jpg",
        "deep/5006.jpg",
        "a/b/c/5007.jpg",
        "a b/5008.jpg",
        None,
        "0000000000000000000000000000000a.jpg",
        None,
    ]


@pytest.mark.parametrize("images", ["dir", "tar"])
def test_parts_map_the_planning_scans_join_index_and_equal_one_process(tmp_path, monkeypatch, images):
    """A partitioned YFCC conversion: the plan saves the join index in OUT/.convert/, every part maps it and
    reads the table from its remembered offset (no part scans the table or lists the images), and the merge
    equals a one-process conversion."""
    from tagstream.tools.convert.inputs import YfccInput
    from tagstream.tools.convert.merge import merge
    from tagstream.tools.convert.parts import PartSpec, convert_part, plan_parts
    from tests.helpers.records import dataset_records

    monkeypatch.setattr(yfcc, "MARK_EVERY", 4)
    (tmp_path / "meta.tsv").write_text("\n".join(yfcc_line(i, video=i == 3) for i in range(14)) + "\n")
    if images == "dir":
        write_images(tmp_path / "images", [i for i in range(14) if i != 6], by_hash=(9,))
        options = {"images": str(tmp_path / "images")}
    else:
        members = []
        for i in (12, 0, 5, 2, 9, 1, 7, 4, 13, 8, 10, 11):
            ext, data = image_bytes(i)
            members += [(f"{i:05d}.{ext}", data), (f"{i:05d}.json", json.dumps({"photoid": 5000 + i}).encode())]
        write_tar(tmp_path / "images.tar", members)
        options = {"images": str(tmp_path / "images.tar"), "id_field": "photoid"}
    convert(tmp_path / "meta.tsv", tmp_path / "one", format="yfcc", shard_size=3, **options)
    plan_parts(tmp_path / "meta.tsv", tmp_path / "ds", 3, format="yfcc", shard_size=3, **options)
    assert (tmp_path / "ds" / ".convert" / "yfcc-index" / "index.json").is_file()
    monkeypatch.setattr(YfccInput, "scan", lambda self: pytest.fail("a part scanned the table again"))
    monkeypatch.setattr(YfccInput, "_index_images", lambda self, h: pytest.fail("a part listed the images again"))
    for i in (2, 0, 1):
        convert_part(tmp_path / "meta.tsv", tmp_path / "ds", PartSpec(i, 3), format="yfcc", shard_size=3, **options)
    monkeypatch.undo()
    merge(tmp_path / "ds")
    assert len(dataset_records(tmp_path / "one")) >= 10
    assert dataset_records(tmp_path / "ds") == dataset_records(tmp_path / "one")


def test_an_images_folder_on_object_storage_is_listed_prefix_by_prefix_in_sorted_order(s3_server, tmp_path):  # noqa: F811
    """The remote listing streams one prefix at a time in the order of sorted() over a recursive find (the
    fingerprint's order), and a YFCC conversion joins to images on S3."""
    from tagstream.loader.data import storage
    from tagstream.tools.convert.inputs.yfcc import walk_sorted_remote

    s3_server.create_bucket("bkt")
    names = ["a", "a.jpg", "a/b.jpg", "a0.jpg", "ab/c", "abc", ".hidden", "deep/er/x y.jpg", "é/日本.jpg", "Z.jpg"]
    for i, name in enumerate(names):
        s3_server.put("bkt", f"img/{name}", b"x" * (i + 1))
    fs, path = storage.filesystem("s3://bkt/img")
    found = fs.find(path, withdirs=False, detail=True)
    before = sorted((p[len(path) :].lstrip("/"), int(d["size"])) for p, d in found.items())  # the listing of before
    assert list(walk_sorted_remote("s3://bkt/img", fs, path)) == before and len(before) == len(names)

    ids = [0, 1, 3]
    for i in ids:
        ext, data = image_bytes(i)
        s3_server.put("bkt", f"photos/{5000 + i}.{ext}", data)
    (tmp_path / "meta.tsv").write_text("\n".join(yfcc_line(i) for i in range(4)) + "\n")
    summary = convert(tmp_path / "meta.tsv", tmp_path / "ds", format="yfcc", images="s3://bkt/photos")
    assert (summary.images, summary.rejected) == (3, {"missing_file": 1})


def test_link_outside_the_images_folder_is_refused(tmp_path):
    """A symbolic link in --images to a file outside it is a `symlink` reject (as ImageFolder's), not followed;
    a link inside the folder is read."""
    write_images(tmp_path / "images", [0])
    secret = tmp_path / "elsewhere" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(image_bytes(1)[1])
    (tmp_path / "images" / "5001.jpg").symlink_to(secret)
    inside = next((tmp_path / "images").rglob("5000.*"))
    (tmp_path / "images" / "5002.jpg").symlink_to(inside)
    table = tmp_path / "yfcc.tsv"
    table.write_text("\n".join(yfcc_line(i) for i in range(3)) + "\n")
    source = Source(table, "yfcc", images=str(tmp_path / "images"))
    source.scan()
    got = list(source.items())
    assert [(i.reason if i.error else "ok") for i in got] == ["ok", "symlink", "ok"]
    assert "outside --images" in got[1].error and got[1].tags == ()


def test_a_cut_bz2_table_is_named_in_one_line(tmp_path):
    from click.testing import CliRunner

    from tagstream.tools.cli import main

    write_images(tmp_path / "images", range(3))
    data = bz2.compress(("\n".join(yfcc_line(i) for i in range(300)) + "\n").encode())
    (tmp_path / "cut.bz2").write_bytes(data[: len(data) // 2])
    args = ["convert", str(tmp_path / "cut.bz2"), str(tmp_path / "ds"), "--format", "yfcc", "--no-progress"]
    res = CliRunner().invoke(main, [*args, "--images", str(tmp_path / "images")])
    assert res.exit_code == 1 and "Aborted" not in res.output
    assert (
        "cut.bz2: the bz2 stream ends before its end-of-stream marker" in res.output
        and len(res.output.strip().splitlines()) == 1
    )
