"""Embedding files (npy, npz, safetensors), part joins, and the export in dataset order over 1 and 2 ranks."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from tagstream.train.embed_io import (
    indices_path,
    join_parts,
    load_embeddings,
    part_path,
    read_safetensors,
    save_embeddings,
    write_safetensors,
)


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".safetensors"])
def test_embedding_file_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    f = rng.standard_normal((7, 5)).astype(np.float32)
    i = np.arange(10, 17, dtype=np.int64)
    written = save_embeddings(tmp_path / f"e{suffix}", f, i, metadata={"model": "m"})
    assert all(p.exists() for p in written)
    f2, i2 = load_embeddings(tmp_path / f"e{suffix}")
    np.testing.assert_array_equal(f2, f)
    np.testing.assert_array_equal(i2, i)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)  # no temp files left
    if suffix == ".npy":
        assert indices_path(tmp_path / "e.npy").name == "e.indices.npy"


def test_safetensors_layout_follows_the_spec(tmp_path):
    f = np.arange(6, dtype=np.float32).reshape(2, 3)
    i = np.array([3, 9], dtype=np.int64)
    write_safetensors(tmp_path / "x.safetensors", {"features": f, "indices": i}, {"k": "v"})
    data = (tmp_path / "x.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0 and data[8:9] == b"{"
    header = json.loads(data[8 : 8 + n])
    assert header["__metadata__"] == {"k": "v"}
    assert header["features"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    assert header["indices"] == {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}
    body = data[8 + n :]
    assert len(body) == 40
    assert body[:24] == f.astype("<f4").tobytes() and body[24:] == i.astype("<i8").tobytes()
    tensors, meta = read_safetensors(tmp_path / "x.safetensors")
    assert meta == {"k": "v"}
    np.testing.assert_array_equal(tensors["features"], f)


def test_safetensors_readable_by_the_reference_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    f = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    save_embeddings(tmp_path / "e.safetensors", f, np.arange(4), metadata={"a": "b"})
    loaded = st.load_file(str(tmp_path / "e.safetensors"))
    np.testing.assert_array_equal(loaded["features"], f)


def test_bad_suffix_and_truncated_safetensors(tmp_path):
    with pytest.raises(ValueError, match="suffix"):
        save_embeddings(tmp_path / "e.csv", np.zeros((1, 1)), np.zeros(1))
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(ValueError, match="runs past"):
        read_safetensors(tmp_path / "bad.safetensors")


def _write_part(path, rank, world, feats, idx):
    np.savez(part_path(path, rank, world), features=feats, indices=idx)


def test_join_parts_sorts_and_deduplicates_padding(tmp_path):
    out = tmp_path / "e.npz"
    feats = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    # rank 0 took images 0, 2, 4, 6, 8; rank 1 took 1, 3, 5, 7, 9 and a padded repeat of 9
    _write_part(out, 0, 2, feats[0::2], np.arange(0, 10, 2))
    _write_part(out, 1, 2, np.concatenate([feats[1::2], feats[9:]]), np.array([1, 3, 5, 7, 9, 9]))
    f, i = join_parts(out, 2, expected=np.arange(10))
    np.testing.assert_array_equal(i, np.arange(10))
    np.testing.assert_array_equal(f, feats)
    assert not list(tmp_path.glob("*.part-*"))
    np.testing.assert_array_equal(load_embeddings(out)[0], feats)


def test_join_parts_refuses_gaps_and_conflicts(tmp_path):
    out = tmp_path / "e.npz"
    _write_part(out, 0, 1, np.zeros((2, 2), np.float32), np.array([0, 2]))
    with pytest.raises(ValueError, match="1 images missing"):
        join_parts(out, 1, expected=np.arange(3))
    _write_part(out, 0, 1, np.array([[0, 0], [1, 1]], np.float32), np.array([0, 0]))
    with pytest.raises(ValueError, match="twice"):
        join_parts(out, 1, expected=np.arange(1))
    _write_part(out, 0, 2, np.zeros((1, 2), np.float32), np.array([0]))
    with pytest.raises(FileNotFoundError, match="rank 1"):
        join_parts(out, 2, expected=np.arange(2))
