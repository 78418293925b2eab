"""YFCC100M metadata as a conversion source: both layouts, plain and bz2, tag decoding, videos, the join to a
folder of images (by id or hash) or to img2dataset tars, positions past a remembered offset."""

from __future__ import annotations

import bz2
import json

import pytest
from tagstream.tools.convert import source_yfcc
from tagstream.tools.convert.engine import convert
from tagstream.tools.convert.sources import Source

from tests.helpers.webdataset import image_bytes, item_image, write_tar


def yfcc_line(i: int, *, layout: int = 25, video: bool = False) -> str:
    """One dataset line of photo 5000+i: user tags 'sun,new+york,caf%C3%A9<i>', machine tag 'vision:outdoor'."""
    cols = [str(5000 + i), f"{i:032x}", "12345@N00", "nick", "2010-01-01 00:00:00.0", "1262304000", "Canon",
            "title", "description", f"sun,new+york,caf%C3%A9{i}", "vision%3Aoutdoor", "", "", "",
            "http://www.flickr.com/photos/x/1/", "http://farm1.staticflickr.com/1/1_x.jpg", "CC BY",
            "http://creativecommons.org/licenses/by/2.0/", "1", "1", "secret", "osecret", "jpg", "1" if video else "0"]
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
    assert count == 7 and kinds == ["ok", "ok", "video", "ok", "missing_file",
                                    "ok" if layout == 25 else "missing_file", "bad_metadata"]
    assert got[0].tags == ("sun", "new york", "café0", "vision:outdoor") and got[0].source == "5000"
    assert source.describe()["images_kind"] == "dir" and source._reader.layout == layout


def test_bz2_marks_and_tar_images(tmp_path, monkeypatch):
    monkeypatch.setattr(source_yfcc, "MARK_EVERY", 3)  # remembered offsets every 3 lines
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
    assert runs[0] == runs[1] and len(source._reader.marks) == 0  # bz2 is read from its start
    assert [e is None for _, _, e, _ in runs[0]] == [i in (0, 1, 3, 7) for i in range(10)]
    assert runs[0][3][3] == image_bytes(3)[1]
    summary = convert(tmp_path / "meta.bz2", tmp_path / "ds", format="yfcc", images=str(tmp_path / "images.tar"),
                      id_field="photoid")
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
