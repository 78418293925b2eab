"""Parquet tables as a conversion source: path and binary image columns, list and string tags, img2dataset's
status column, damaged files, enumeration from any position."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tagstream.tools.convert.engine import convert
from tagstream.tools.convert.inputs import Source
from tests.helpers.webdataset import image_bytes


def test_columns_status_and_positions(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(image_bytes(1)[1])
    table = pa.table(
        {
            "path": ["img/a.jpg", "img/missing.jpg", "", "img/a.jpg", "img/a.jpg", "s3://bucket/b.jpg"],
            "labels": ["#x y", None, "z", "w", "v", "u"],
            "text": [None, "a #Cap", None, None, None, None],
            "status": ["success", "success", "success", "failed_to_download", "success", "success"],
            "error_message": [None, None, None, "timeout", None, None],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2)
    source = Source(tmp_path / "t.parquet", image_column="path", tags_column="labels", caption_column="text")
    count, _ = source.scan()
    got = list(source.items())
    assert count == 6 and [i.pos for i in got] == list(range(6))
    assert [(i.reason if i.error else "ok") for i in got] == ["ok", "ok", "bad_metadata", "download_failed", "ok", "ok"]
    assert got[0].image == str(tmp_path / "img" / "a.jpg") and got[0].tags == ("#x", "y") and got[0].data is None
    assert got[1].tags == ("Cap",) and "timeout" in got[3].error and got[5].image == "s3://bucket/b.jpg"
    for start in range(count + 1):
        assert [(i.pos, i.error) for i in source.items(start)] == [(i.pos, i.error) for i in got[start:]]
    with pytest.raises(ValueError, match="no image column 'image'"):
        Source(tmp_path / "t.parquet").scan()


def test_binary_images_and_a_damaged_file(tmp_path):
    rows = [image_bytes(i)[1] for i in range(4)]
    pq.write_table(
        pa.table({"jpg": pa.array(rows, pa.binary()), "tags": [["a"], [], ["b", None], None], "id": [10, 11, 12, 13]}),
        tmp_path / "00000.parquet",
    )
    (tmp_path / "00001.parquet").write_bytes(b"PAR1 this is not a table PAR1")
    summary = convert(tmp_path, tmp_path / "ds", image_column="jpg")
    assert summary.inputs == 5 and summary.images == 4
    assert summary.rejected == {"damaged_file": 1}
    assert summary.manifest["source"]["format"] == "parquet"
