"""build_loader end to end on CPU: plan order, labels, sampling modes, eval coverage, resume, bad data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tagstream.loader import IMAGENET_MEAN, IMAGENET_STD, build_loader, normalize_images
from tagstream.loader.config import LoaderConfig
from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.vocab import Vocab
from tagstream.loader.sampling.sampler import RankSampler, eligibility
from tagstream.tools.bench.loader_data import decode_index_color, index_tags
from tests.helpers.damage import put_record
from tests.helpers.datasets import NUM_TAGS, make_index_dataset

N = 48
DECODERS = ["turbo", "dali"]  # the CPU path's two decode placements (LoaderConfig.cpu_decoder)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(make_index_dataset(tmp_path_factory.mktemp("loader") / "ds", n=N, shard_size=16).root)


def cfg(root: str, **kw) -> LoaderConfig:
    base = dict(dataset=root, vocab="v", batch_size=8, image_size=16, workers=1, threads=1, prefetch=2)
    base.update(kw)
    return LoaderConfig(**base)


def run_epoch(loader) -> tuple[np.ndarray, np.ndarray, list]:
    idx, imgs, targets = [], [], []
    for batch in loader:
        idx.append(batch.indices.numpy())
        imgs.append(batch.images.numpy())
        targets.append(batch.targets)
    return np.concatenate(idx), np.concatenate(imgs), targets


def expected_soft(indices) -> np.ndarray:
    out = np.zeros((len(indices), NUM_TAGS), np.float32)
    for row, i in enumerate(indices):
        tags = index_tags(int(i), NUM_TAGS)
        out[row, tags] = 1.0 / len(tags)
    return out


@pytest.mark.parametrize("decoder", DECODERS)
def test_indices_pixels_and_targets_follow_the_plan(root, decoder):
    config = cfg(root, sampling="sqrt", seed=4, cpu_decoder=decoder)
    loader = build_loader(config)
    sampler = RankSampler.from_config(config, Dataset(root), Vocab(Dataset(root), "v"))
    assert (
        len(loader) == sampler.len_per_rank // 8 == N // 8 and loader.num_classes == NUM_TAGS and not loader.normalized
    )
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        idx, imgs, targets = run_epoch(loader)
        np.testing.assert_array_equal(idx, sampler.plan(epoch, 0, len(loader) * 8))
        assert [decode_index_color(im) for im in imgs] == [i % 512 for i in idx]
        np.testing.assert_allclose(torch.cat(targets).numpy(), expected_soft(idx), rtol=1e-6)
        assert imgs.dtype == np.uint8 and imgs.shape[1:] == (16, 16, 3)
    loader.close()


def test_multihot_and_sparse_targets(root):
    idx, _, targets = run_epoch(build_loader(cfg(root, targets="multihot", mode="eval")))
    np.testing.assert_array_equal(torch.cat(targets).numpy(), (expected_soft(idx) > 0).astype(np.float32))
    idx, _, targets = run_epoch(build_loader(cfg(root, targets="sparse", max_labels=2, mode="eval")))
    ids = torch.cat([t[0] for t in targets]).numpy()
    w = torch.cat([t[1] for t in targets]).numpy()
    for row, i in enumerate(idx):
        tags = index_tags(int(i), NUM_TAGS)[:2]
        assert ids[row, : len(tags)].tolist() == tags and (ids[row, len(tags) :] == -1).all()
        np.testing.assert_allclose(w[row, : len(tags)], 1.0 / len(tags))


def test_eval_max_images_reads_evenly_spread_images_over_two_ranks(root):
    loaders = [build_loader(cfg(root, mode="eval", eval_max_images=10), rank, 2) for rank in range(2)]
    idx = np.concatenate([run_epoch(loader)[0] for loader in loaders])
    assert len(loaders[0]) == len(loaders[1]) == 1  # 5 images each: one batch of 8
    np.testing.assert_array_equal(idx, (np.arange(10) * N) // 10)  # 0, 4, 9, ..., 43
    for loader in loaders:
        loader.close()
    with pytest.raises(ValueError, match="eval_max_images=-1 must be a whole number"):
        cfg(root, mode="eval", eval_max_images=-1)


@pytest.mark.parametrize("sampling", ["natural", "sqrt", "uniform", "power:0.3"])
def test_every_sampling_mode_with_a_mask(root, sampling):
    ds = Dataset(root)
    (ds.root / fmt.MASKS_DIR).mkdir(exist_ok=True)
    mask = np.zeros(N, bool)
    mask[::3] = True
    np.save(ds.root / fmt.MASKS_DIR / "drop3.npy", mask)
    config = cfg(root, sampling=sampling, masks=("drop3",), samples_per_epoch=64, seed=9)
    idx, imgs, _ = run_epoch(build_loader(config))
    sampler = RankSampler.from_config(config, ds, Vocab(ds, "v"))
    np.testing.assert_array_equal(idx, sampler.plan(0, 0, 64))
    assert not mask[idx].any() and len(idx) == 64
    assert [decode_index_color(im) for im in imgs] == [i % 512 for i in idx]


@pytest.mark.parametrize("decoder", DECODERS)
def test_eval_covers_every_image_once_over_ranks(root, decoder):
    config = cfg(root, mode="eval", batch_size=5, split="holdout", holdout_fraction=0.5, cpu_decoder=decoder)
    eligible = np.flatnonzero(eligibility(Dataset(root), holdout_fraction=0.5, split="holdout"))
    loaders = [build_loader(config, rank=r, world=3) for r in range(3)]
    assert len({len(ld) for ld in loaders}) == 1
    seen = []
    for ld in loaders:
        batches = list(ld)
        assert len(batches) == len(ld)
        for b in batches:
            assert b.images.shape[0] == b.indices.shape[0] == b.targets.shape[0]
            assert [decode_index_color(im) for im in b.images.numpy()] == [i % 512 for i in b.indices.tolist()]
        seen.append(torch.cat([b.indices for b in batches]).numpy())
        ld.close()
    np.testing.assert_array_equal(np.concatenate(seen), eligible)  # in dataset order, each once


def test_interrupted_iteration_continues_and_state_round_trips(root):
    config = cfg(root, seed=2)
    full, full_imgs, _ = run_epoch(build_loader(config))
    loader = build_loader(config)
    it = iter(loader)
    first = [next(it).indices for _ in range(2)]
    state = loader.state_dict()
    assert state["epoch"] == 0 and state["step"] == 2
    rest = [b.indices for b in loader]  # a new iteration continues from step 2, no rebuild
    np.testing.assert_array_equal(torch.cat(first + rest).numpy(), full)
    other = build_loader(config)
    other.load_state_dict(state)
    idx, imgs, _ = run_epoch(other)
    np.testing.assert_array_equal(idx, full[16:])
    np.testing.assert_array_equal(imgs, full_imgs[16:])
    with pytest.raises(ValueError, match="batch_size"):
        build_loader(cfg(root, seed=2, batch_size=4)).load_state_dict(state)
    with pytest.raises(ValueError, match="step"):
        other.load_state_dict({"epoch": 0, "step": 99})


RESUME_SCRIPT = """
import json, sys, numpy as np
from tagstream.loader import build_loader
from tagstream.loader.config import LoaderConfig
config = LoaderConfig(**json.loads(sys.argv[1]))
loader = build_loader(config)
loader.load_state_dict(json.loads(sys.argv[2]))
idx, imgs = [], []
for epoch in (loader.state_dict()["epoch"], loader.state_dict()["epoch"] + 1):
    if epoch != loader.state_dict()["epoch"]:
        loader.set_epoch(epoch)
    for b in loader:
        idx.append(b.indices.numpy()); imgs.append(b.images.numpy())
np.savez(sys.argv[3], idx=np.concatenate(idx), imgs=np.concatenate(imgs))
"""


@pytest.mark.parametrize("decoder", DECODERS)
def test_exact_resume_in_a_fresh_process(tmp_path, decoder):
    """The resumed process runs with the JIT switched the other way from this one: plans and crops
    must not depend on it (so this covers NUMBA_DISABLE_JIT=1 whichever way the suite runs)."""
    # larger, varied images so crops and flips show in the pixels
    from tagstream.tools.bench.loader_data import encode_jpeg, photo_like, write_dataset, write_identity_vocab

    rng = np.random.default_rng(0)
    records = (
        (encode_jpeg(photo_like(rng, 48 + i % 3 * 8, 40)), index_tags(i, NUM_TAGS), 48 + i % 3 * 8, 40)
        for i in range(24)
    )
    ds = write_dataset(tmp_path / "ds", records, num_images=24, shard_size=10, num_tags=NUM_TAGS)
    write_identity_vocab(ds, "v")
    kw = dict(
        dataset=str(ds.root),
        vocab="v",
        batch_size=4,
        image_size=24,
        workers=2,
        threads=1,
        seed=5,
        samples_per_epoch=24,
        cpu_decoder=decoder,
    )
    loader = build_loader(LoaderConfig(**kw))
    loader.set_epoch(1)
    idx1, imgs1, _ = run_epoch(loader)
    loader.set_epoch(2)
    idx2, imgs2, _ = run_epoch(loader)
    state = {"epoch": 1, "step": 2}
    out = tmp_path / "resumed.npz"
    jit_off = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
    env = dict(os.environ, NUMBA_DISABLE_JIT="0" if jit_off else "1")
    subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, json.dumps(kw), json.dumps(state), str(out)],
        check=True,
        env=env,
        timeout=240,
    )
    got = np.load(out)
    np.testing.assert_array_equal(got["idx"], np.concatenate([idx1[8:], idx2]))
    np.testing.assert_array_equal(got["imgs"], np.concatenate([imgs1[8:], imgs2]))
    assert not np.array_equal(imgs1[8:12], imgs2[:4])


def _corrupt(root: Path, shard: int, local: int, value: bytes) -> None:
    """Damage one record under a manifest rewritten to match (the shard's size check passes)."""
    put_record(root, fmt.shard_name(shard), local, value)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "value, message",
    [
        (b"\xc1\xc1\xc1", "shard 00001 key 4 .*does not parse"),
        (fmt.pack_record(b"\xff\xd8\xff\xe0" + b"\x00" * 300, [1], "bad"), "shard 00001 key 4 .*cannot decode"),
    ],
)
@pytest.mark.parametrize("decoder", DECODERS)
def test_bad_record_names_shard_and_key(tmp_path, value, message, decoder):
    ds = make_index_dataset(tmp_path / "ds", n=32, shard_size=16)
    _corrupt(ds.root, 1, 4, value)
    loader = build_loader(cfg(str(ds.root), mode="eval", workers=2, cpu_decoder=decoder))
    with pytest.raises(Exception, match=message):
        for _ in loader:
            pass
    loader.close()


@pytest.mark.timeout(120)
def test_missing_shard_names_it(tmp_path):
    import shutil

    ds = make_index_dataset(tmp_path / "ds", n=32, shard_size=16)
    shutil.rmtree(ds.shard_path(1))
    loader = build_loader(cfg(str(ds.root), mode="eval"))
    with pytest.raises(Exception, match="shard 00001 is missing"):
        list(loader)


def test_config_errors(root):
    with pytest.raises(ValueError, match="batch_size=64"):
        build_loader(cfg(root, batch_size=64))
    with pytest.raises(ValueError, match="rank=2"):
        build_loader(cfg(root), rank=2, world=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"workers": 10000}, "workers=10000"),
        ({"image_size": 10**20}, "image_size="),
        ({"seed": -1}, "seed=-1"),
        ({"partitions": 0}, "partitions=0"),
        ({"prefetch": 65}, "prefetch=65"),
        ({"resize_size": 10**9}, "resize_size="),
    ],
)
def test_every_number_has_a_range_shared_with_the_train_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoaderConfig(dataset="ds", vocab="v", **kwargs)


def test_normalize_images():
    x = torch.randint(0, 256, (2, 5, 6, 3), dtype=torch.uint8)
    y = normalize_images(x, device="cpu", dtype=torch.float32, channels_last=True)
    ref = (x.permute(0, 3, 1, 2).float() - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD
    ).view(1, 3, 1, 1)
    assert y.shape == (2, 3, 5, 6) and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(normalize_images(ref, dtype=torch.float64), ref.double())
    with pytest.raises(ValueError, match="B, H, W, 3"):
        normalize_images(torch.zeros(2, 3, 5, 5, dtype=torch.uint8))


def test_next_epoch_continues_the_same_pipeline(root):
    config = cfg(root, seed=6)
    loader = build_loader(config)
    sampler = RankSampler.from_config(config, Dataset(root), Vocab(Dataset(root), "v"))
    first = [b.indices for _, b in zip(range(len(loader)), loader)]  # stops right after the last batch
    pipe = loader._pipe
    loader.set_epoch(1)
    idx, _, _ = run_epoch(loader)
    np.testing.assert_array_equal(torch.cat(first).numpy(), sampler.plan(0, 0, len(loader) * 8))
    np.testing.assert_array_equal(idx, sampler.plan(1, 0, len(loader) * 8))
    assert loader._pipe is pipe  # epoch 1 came from the running workers, no restart
    loader.close()


def test_reads_a_converted_dataset(tiny_dataset):
    """The loader over what `tagstream convert` wrote (the shared fixture): eval once in order, train by plan."""
    from tagstream.tools.bench.loader_data import write_identity_vocab

    root = tiny_dataset(13, shard_size=5)
    ds = Dataset(root)
    write_identity_vocab(ds, "v")
    tag_id = {text: t for t, text, _ in ds.tags}
    idx, imgs, targets = run_epoch(build_loader(cfg(str(root), mode="eval", batch_size=4)))
    np.testing.assert_array_equal(idx, np.arange(13))
    assert [tiny_dataset.index_of(im) for im in imgs] == list(range(13))
    dense = torch.cat(targets).numpy()
    for row, i in enumerate(idx):
        expected = np.zeros(dense.shape[1], np.float32)
        expected[[tag_id[t] for t in tiny_dataset.tags(int(i))]] = 1 / 3
        np.testing.assert_allclose(dense[row], expected, rtol=1e-6)
    config = cfg(str(root), batch_size=4, sampling="uniform")
    idx, imgs, _ = run_epoch(build_loader(config))
    np.testing.assert_array_equal(idx, RankSampler.from_config(config, ds, Vocab(ds, "v")).plan(0, 0, 12))
    assert [tiny_dataset.index_of(im) for im in imgs] == idx.tolist()


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_both_cpu_decoders_give_the_same_images(tmp_path, mode):
    """The window decoder (turbo) and DALI's operators: same indices, same crops, pixels within the
    resamplers' differences (the GPU test holds DALI's GPU path to the same bound against the CPU path)."""
    from tagstream.tools.bench.loader_data import encode_jpeg, photo_like, write_dataset, write_identity_vocab

    rng = np.random.default_rng(1)
    records = ((encode_jpeg(photo_like(rng, 64, 48)), index_tags(i, NUM_TAGS), 64, 48) for i in range(24))
    ds = write_dataset(tmp_path / "ds", records, num_images=24, shard_size=10, num_tags=NUM_TAGS)
    write_identity_vocab(ds, "v")
    kw = dict(dataset=str(ds.root), vocab="v", batch_size=8, image_size=32, workers=1, threads=1, seed=3, mode=mode)
    turbo_idx, turbo_imgs, _ = run_epoch(build_loader(LoaderConfig(**kw, cpu_decoder="turbo")))
    dali_idx, dali_imgs, _ = run_epoch(build_loader(LoaderConfig(**kw, cpu_decoder="dali")))
    np.testing.assert_array_equal(turbo_idx, dali_idx)
    diff = np.abs(turbo_imgs.astype(np.float32) - dali_imgs.astype(np.float32))
    assert diff.mean() < 4.0, diff.mean()


def test_dct_scaling_setting_reaches_the_decoder(tmp_path):
    """LoaderConfig.dct_scaling: the same samples, windows and flips; crops >= 2x image_size on both sides
    are decoded at a reduced DCT scale (other pixels), and off, at full scale."""
    from tagstream.tools.bench.loader_data import encode_jpeg, photo_like, write_dataset, write_identity_vocab

    rng = np.random.default_rng(1)
    records = ((encode_jpeg(photo_like(rng, 160, 120), 90), index_tags(i, NUM_TAGS), 160, 120) for i in range(16))
    ds = write_dataset(tmp_path / "ds", records, num_images=16, shard_size=16, num_tags=NUM_TAGS)
    write_identity_vocab(ds, "v")
    runs = {}
    for dct in (True, False):
        loader = build_loader(cfg(str(ds.root), image_size=24, sampling="natural", seed=3, dct_scaling=dct))
        runs[dct] = run_epoch(loader)[:2]
        loader.close()
    np.testing.assert_array_equal(runs[True][0], runs[False][0])
    diff = np.abs(runs[True][1].astype(int) - runs[False][1].astype(int))
    assert diff.max() > 2 and diff.mean() < 8
