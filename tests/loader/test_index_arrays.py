"""Optional index arrays (format.OPTIONAL_INDEX_ARRAYS): written through write_index beside the required
ones, read when present, absent in datasets written before them, refused when malformed."""

from __future__ import annotations

import numpy as np
import pytest

from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.writer import write_index, write_manifest


def _dataset(root, *, boxes: bool):
    arrays = {"tag_offsets": [0, 1, 1], "tag_ids": [0], "width": [40, 30], "height": [20, 30], "phash": [1, 2]}
    if boxes:
        arrays["content_box"] = fmt.pack_boxes(np.array([[0, 2, 40, 18], [0, 0, 30, 30]]))
    write_index(root, "00000", **arrays)
    write_manifest(root, [{"name": "00000", "images": 2, "bytes": 0, "sha256": ""}], tags=1, source={})
    return Dataset(root)


def test_an_optional_array_is_read_when_present_and_absent_in_older_datasets(tmp_path):
    new, old = _dataset(tmp_path / "new", boxes=True), _dataset(tmp_path / "old", boxes=False)
    assert new.has_index_array(0, "content_box") and not old.has_index_array(0, "content_box")
    assert fmt.unpack_boxes(new.index_array(0, "content_box")).tolist() == [[0, 2, 40, 18], [0, 0, 30, 30]]
    with pytest.raises(fmt.FormatError, match="missing index file 00000.content_box.npy"):
        old.index_array(0, "content_box")
    with pytest.raises(ValueError, match="unknown index array 'boxes'; known: .*'content_box'"):
        new.index_array(0, "boxes")


def test_write_index_refuses_unknown_and_miscounted_arrays(tmp_path):
    base = {"tag_offsets": [0, 0], "tag_ids": [], "width": [4], "height": [4], "phash": [0]}
    with pytest.raises(ValueError, match="with any of \\['content_box', 'digest'\\]"):
        write_index(tmp_path, "00000", **base, boxes=[0])
    with pytest.raises(ValueError, match="disagree on the image count 1"):
        write_index(tmp_path, "00000", **base, content_box=[0, 0])


def test_a_malformed_optional_array_is_a_format_error(tmp_path):
    ds = _dataset(tmp_path / "ds", boxes=True)
    np.save(fmt.index_path(ds.root, "00000", "content_box"), np.zeros(3, np.uint64))
    with pytest.raises(fmt.FormatError, match="content_box.npy: uint64 of shape \\(3,\\)"):
        Dataset(ds.root).index_array(0, "content_box")
