"""The GPU path (device="gpu", mixed decode, normalisation in the pipeline): same plan and pixels as CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tagstream.loader import IMAGENET_MEAN, IMAGENET_STD, build_loader
from tagstream.loader.config import LoaderConfig
from tagstream.tools.bench.loader_data import encode_jpeg, index_tags, photo_like, write_dataset, write_identity_vocab

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.timeout(300),
]


def _denormalize(x: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x * std + mean).permute(0, 2, 3, 1).cpu().numpy()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    rng = np.random.default_rng(1)
    records = ((encode_jpeg(photo_like(rng, 64, 48)), index_tags(i, 12), 64, 48) for i in range(48))
    ds = write_dataset(tmp_path_factory.mktemp("gpu") / "ds", records, num_images=48, shard_size=16, num_tags=12)
    write_identity_vocab(ds, "v")
    return str(ds.root)


def _cfg(root: str, device: str, **kw) -> LoaderConfig:
    base = dict(dataset=root, vocab="v", batch_size=8, image_size=32, workers=2, threads=2, seed=3, device=device)
    if device == "gpu":
        base["device_id"] = 0
    base.update(kw)
    return LoaderConfig(**base)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gpu_matches_cpu(root, mode):
    torch.cuda.init()  # CUDA first: spawned DALI workers must not care
    gpu = build_loader(_cfg(root, "gpu", mode=mode))
    cpu = build_loader(_cfg(root, "cpu", mode=mode))
    assert gpu.normalized and not cpu.normalized and len(gpu) == len(cpu)
    for g, c in zip(gpu, cpu):
        assert g.images.is_cuda and g.images.dtype == torch.float32 and g.images.shape == (8, 3, 32, 32)
        np.testing.assert_array_equal(g.indices.numpy(), c.indices.numpy())
        torch.testing.assert_close(g.targets, c.targets)
        diff = np.abs(_denormalize(g.images) - c.images.numpy().astype(np.float32))
        assert diff.mean() < 4.0, diff.mean()  # nvJPEG and libjpeg-turbo upsample chroma differently
    gpu.close()
    cpu.close()


def test_gpu_resume(root):
    config = _cfg(root, "gpu")
    full = [(b.indices.numpy(), _denormalize(b.images)) for b in build_loader(config)]
    resumed = build_loader(config)
    resumed.load_state_dict({"epoch": 0, "step": 2})
    rest = [(b.indices.numpy(), _denormalize(b.images)) for b in resumed]
    assert len(rest) == len(full) - 2
    for (i1, x1), (i2, x2) in zip(full[2:], rest):
        np.testing.assert_array_equal(i1, i2)
        assert np.abs(x1 - x2).mean() < 0.5


def _pipeline_outputs(source, batches: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from tagstream.loader.pipeline.graph import build_pipeline, start, stop

    pipe = start(
        build_pipeline(
            source,
            batch_size=8,
            image_size=32,
            device="gpu",
            device_id=0,
            workers=2,
            threads=2,
            prefetch=2,
            seed=0,
            bytes_per_sample=1 << 16,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        ),
        workers=0 if source.batched else 2,
    )
    out = []
    for _ in range(batches):
        images, index = pipe.run()
        out.append((np.array(images.as_cpu().as_tensor()), np.array(index.as_tensor()).reshape(-1)))
    stop(pipe)
    return out


@pytest.mark.parametrize("train", [True, False])
def test_gpu_batch_source_feeds_nvjpeg_what_the_per_sample_source_did(root, train):
    """The batch source (the GPU path now) against the per-sample source it replaced, both decoding with
    nvJPEG: the same samples, and the same pixels up to the decoder's own variation."""
    from tagstream.loader.data.store import ShardStore
    from tagstream.loader.pipeline.source import EvalPlan
    from tests.helpers.pipelines import batch_source, plan_source

    plan = _ModPlan(48) if train else EvalPlan(np.arange(45, dtype=np.int64), 48)
    common = dict(
        store=ShardStore(root), plan=plan, train=train, length=48, seed=3, rank=0, image_size=32, base_position=8
    )
    per_sample = _pipeline_outputs(plan_source(**common), 5)
    batched = _pipeline_outputs(batch_source(batch_size=8, **common), 5)
    for (a, ia), (b, ib) in zip(per_sample, batched):
        np.testing.assert_array_equal(ia, ib)
        assert a.shape == b.shape == (8, 3, 32, 32) and np.abs(a - b).mean() < 0.02, np.abs(a - b).mean()


class _ModPlan:
    def __init__(self, n: int):
        self.n = n

    def plan(self, epoch: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        return (np.arange(start, stop, dtype=np.int64) * 7 + epoch) % self.n


def test_gpu_decodes_a_large_outlier_among_small_images(tmp_path):
    """A 12-megapixel JPEG (inside GPU_MAX_PIXELS) among 64x48 ones: nvJPEG's preallocated buffers take it
    without failing mid-run; the batch carries its index like any other."""
    rng = np.random.default_rng(2)
    big = np.linspace(0, 255, 4000 * 3000 * 3).reshape(3000, 4000, 3).astype(np.uint8)
    records = [(encode_jpeg(photo_like(rng, 64, 48)), index_tags(i, 12), 64, 48) for i in range(15)]
    records.insert(5, (encode_jpeg(big, quality=85), index_tags(5, 12), 4000, 3000))
    ds = write_dataset(tmp_path / "ds", iter(records), num_images=16, shard_size=8, num_tags=12)
    write_identity_vocab(ds, "v")
    loader = build_loader(_cfg(str(ds.root), "gpu", mode="eval"))
    seen = []
    for batch in loader:
        assert batch.images.shape[1:] == (3, 32, 32) and torch.isfinite(batch.images).all()
        seen += batch.indices.tolist()
    assert sorted(seen) == list(range(16))
    loader.close()
