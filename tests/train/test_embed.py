"""Embedding files (npy, npz, safetensors), part joins, and the export in dataset order over 1 and 2 ranks."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from tagstream.train.embed_io import (
    EmbeddingWriter,
    indices_path,
    join_parts,
    load_embeddings,
    part_path,
    read_safetensors,
    save_embeddings,
    write_safetensors,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".safetensors"])
def test_writer_rows_as_they_come_give_the_file_of_the_whole(tmp_path, suffix):
    rng = np.random.default_rng(1)
    f = rng.standard_normal((11, 4)).astype(np.float32)
    i = np.arange(11, dtype=np.int64) * 3
    with EmbeddingWriter(tmp_path / f"e{suffix}", metadata={"model": "m"}) as out:
        for lo, hi in ((0, 4), (4, 4), (4, 9), (9, 11)):  # an empty batch too
            out.append(f[lo:hi], i[lo:hi])
        assert (out.rows, out.dim) == (11, 4)
    f2, i2 = load_embeddings(tmp_path / f"e{suffix}")
    np.testing.assert_array_equal(f2, f)
    np.testing.assert_array_equal(i2, i)
    if suffix == ".npy":  # byte for byte what numpy writes
        np.save(tmp_path / "ref.npy", f)
        assert (tmp_path / "e.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()
    if suffix == ".safetensors":  # byte for byte the all-at-once writer's file
        write_safetensors(tmp_path / "ref.safetensors", {"features": f, "indices": i}, {"model": "m"})
        assert (tmp_path / "e.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    assert not list(tmp_path.glob(".*"))  # no spool left


def test_writer_refuses_a_changing_width_and_leaves_nothing_on_error(tmp_path):
    with pytest.raises(ValueError, match="rows of 3 features after rows of 2"):
        with EmbeddingWriter(tmp_path / "e.npz") as out:
            out.append(np.zeros((2, 2), np.float32), np.arange(2))
            out.append(np.zeros((2, 3), np.float32), np.arange(2, 4))
    assert not list(tmp_path.iterdir())
    with EmbeddingWriter(tmp_path / "empty.npy") as out:
        pass
    f, i = load_embeddings(tmp_path / "empty.npy")
    assert f.shape == (0, 0) and i.shape == (0,)


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
    assert join_parts(out, 2, expected=np.arange(10)) == (10, 3)
    f, i = load_embeddings(out)
    np.testing.assert_array_equal(i, np.arange(10))
    np.testing.assert_array_equal(f, feats)
    assert not list(tmp_path.glob("*.part-*"))


def test_join_parts_in_dataset_order_streams_and_deduplicates_across_parts(tmp_path):
    # embed's contiguous shares; rank 0's padded last batch repeats image 4, rank 1's first
    out = tmp_path / "e.safetensors"
    feats = np.arange(8, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    _write_part(out, 0, 2, feats[[0, 1, 2, 3, 4, 4]], np.array([0, 1, 2, 3, 4, 4]))
    _write_part(out, 1, 2, feats[4:], np.arange(4, 8))
    assert join_parts(out, 2, expected=np.arange(8), metadata={"model": "m"}) == (8, 2)
    f, i = load_embeddings(out)
    np.testing.assert_array_equal(i, np.arange(8))
    np.testing.assert_array_equal(f, feats)
    _write_part(out, 0, 2, feats[:5], np.arange(5))
    _write_part(out, 1, 2, feats[5:] + 1, np.arange(4, 7))  # image 4 again, with other features
    with pytest.raises(ValueError, match="image 4 was embedded twice"):
        join_parts(out, 2, expected=np.arange(7))
    assert not list(tmp_path.glob(".*.tmp*"))  # the aborted writer left no spool behind


def test_join_parts_accepts_a_rank_without_images(tmp_path):
    out = tmp_path / "e.npy"
    _write_part(out, 0, 2, np.ones((2, 3), np.float32), np.array([0, 1]))
    _write_part(out, 1, 2, np.zeros((0, 0), np.float32), np.zeros(0, np.int64))
    assert join_parts(out, 2, expected=np.arange(2)) == (2, 3)
    f, i = load_embeddings(out)
    assert f.shape == (2, 3) and i.tolist() == [0, 1]


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


# -- the export over a real converted dataset ---------------------------------------------------

MODEL = "regnet_y_tiny"
SIZE = 32


@pytest.fixture
def embed_dataset(tiny_dataset):
    from tagstream.tools.vocab.build import VocabOptions, build_vocab

    ds = tiny_dataset(14, shard_size=5)
    build_vocab(ds, "all", VocabOptions())
    return ds


def _flat_features(colors: list[tuple[int, int, int]]) -> np.ndarray:
    """Features of flat-colour inputs computed without the loader (the same seeded random backbone)."""
    import torch

    from tagstream.loader import normalize_images
    from tagstream.train.models import extract_features
    from tagstream.train.transfer import load_backbone

    net, _ = load_backbone(None, model=MODEL, image_size=SIZE, seed=0)
    net.eval()
    px = torch.tensor(colors, dtype=torch.uint8)[:, None, None, :].expand(-1, SIZE, SIZE, 3).contiguous()
    with torch.no_grad():
        return extract_features(net, normalize_images(px)).numpy()


def test_embed_one_rank_is_in_dataset_order(embed_dataset, tiny_dataset, tmp_path):
    from tagstream.train.embed import EmbedConfig, embed

    out = tmp_path / "e.npz"
    summary = embed(
        EmbedConfig(
            data=str(embed_dataset), out=str(out), model=MODEL, image_size=SIZE, batch_size=4, workers=0, progress=False
        ),
        rank=0,
        world=1,
    )
    assert summary["images"] == 14 and summary["vocab"] == "all"
    feats, idx = load_embeddings(out)
    np.testing.assert_array_equal(idx, np.arange(14))
    # row i must be the features of image i (flat colour color(i)): nearest among all 14 references
    ref = _flat_features([tiny_dataset.color(i) for i in range(14)])
    dist = ((feats[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(dist.argmin(axis=1), np.arange(14))


def test_embed_writes_each_batch_before_the_next_is_made(embed_dataset, tmp_path, monkeypatch):
    """No N x D matrix in memory: when batch k is computed, batches 0..k-1 are already on disk (the 10^6-image
    embed had held every row: docs/scale.md)."""
    import tagstream.train.embed as embed_module

    out = tmp_path / "e.npy"
    spooled = []

    def watched(*args, **kwargs):
        for features, indices in embed_module.__dict__["_iter_features"](*args, **kwargs):
            spooled.append(sum(p.stat().st_size for p in tmp_path.glob(".e.features.tmp*")))
            yield features, indices

    monkeypatch.setitem(embed_module.__dict__, "_iter_features", embed_module.iter_features)
    monkeypatch.setattr(embed_module, "iter_features", watched)
    cfg = embed_module.EmbedConfig(
        data=str(embed_dataset), out=str(out), model=MODEL, image_size=SIZE, batch_size=4, workers=0, progress=False
    )
    assert embed_module.embed(cfg, rank=0, world=1)["images"] == 14
    dim = load_embeddings(out)[0].shape[1]
    assert spooled == [4 * dim * 4 * k for k in range(4)]  # batches of 4, 4, 4, 2 rows of float32
    assert not list(tmp_path.glob(".*"))


def test_embed_two_ranks_under_torchrun_equals_one_rank(embed_dataset, tmp_path):
    import os
    import subprocess
    import sys

    from tagstream.train.embed import EmbedConfig, embed

    one = tmp_path / "one.npy"
    embed(
        EmbedConfig(
            data=str(embed_dataset), out=str(one), model=MODEL, image_size=SIZE, batch_size=4, workers=0, progress=False
        ),
        rank=0,
        world=1,
    )
    two = tmp_path / "two.safetensors"
    script = Path(sys.executable).parent / "tagstream"  # the console script; torchrun runs it with python
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(script),
        "embed",
        "--data",
        str(embed_dataset),
        "--out",
        str(two),
        "--model",
        MODEL,
        "--image-size",
        str(SIZE),
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "14 images" in res.stdout and "2 rank(s)" in res.stdout
    f1, i1 = load_embeddings(one)
    f2, i2 = load_embeddings(two)
    np.testing.assert_array_equal(i2, i1)
    np.testing.assert_allclose(f2, f1, rtol=1e-5, atol=1e-6)
    assert not list(tmp_path.glob("*.part-*"))


def test_embed_cli_one_rank_and_refusals(embed_dataset, tmp_path):
    from click.testing import CliRunner

    from tagstream.tools.cli import main

    runner = CliRunner()
    out = tmp_path / "e.safetensors"
    res = runner.invoke(
        main,
        [
            "embed",
            "--data",
            str(embed_dataset),
            "--out",
            str(out),
            "--model",
            MODEL,
            "--image-size",
            str(SIZE),
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "embedded 14 images" in res.output
    tensors, meta = read_safetensors(out)
    assert tensors["features"].shape[0] == 14 and meta["model"] == MODEL
    res = runner.invoke(
        main, ["embed", "--data", str(embed_dataset), "--out", str(tmp_path / "e.txt"), "--model", MODEL]
    )
    assert res.exit_code != 0 and "suffix" in res.output
    res = runner.invoke(main, ["embed", "--data", str(embed_dataset), "--out", str(out)])
    assert res.exit_code != 0 and "checkpoint" in res.output
    assert "Example" in runner.invoke(main, ["embed", "--help"]).output


@pytest.mark.gpu
def test_embed_on_gpu_is_in_dataset_order(embed_dataset, tiny_dataset, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from tagstream.train.embed import EmbedConfig, embed

    out = tmp_path / "g.npy"
    summary = embed(
        EmbedConfig(
            data=str(embed_dataset),
            out=str(out),
            model=MODEL,
            image_size=SIZE,
            batch_size=4,
            workers=1,
            device="cuda",
            progress=False,
        ),
        rank=0,
        world=1,
    )
    assert summary["images"] == 14
    feats, idx = load_embeddings(out)
    np.testing.assert_array_equal(idx, np.arange(14))
    ref = _flat_features([tiny_dataset.color(i) for i in range(14)])
    dist = ((feats[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(dist.argmin(axis=1), np.arange(14))
