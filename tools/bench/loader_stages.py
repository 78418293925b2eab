"""`tagstream bench loader`'s per-stage breakdown: the cost of each stage of our loader measured alone,
per image: record read, decode + augment over records already in memory, targets."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tagstream.loader.config import LoaderConfig


def targets(vocab: Any, indices: np.ndarray) -> np.ndarray:
    from tagstream.kernels.targets import soft_targets

    return soft_targets(
        vocab.label_offsets, vocab.labels, indices, np.zeros((len(indices), vocab.num_classes), np.float32)
    )


class _MemoryStore:
    """A ShardStore whose records are already in memory: isolates decode + augment from reading."""

    def __init__(self, store: Any, records: dict[int, bytes]):
        self.store, self.records, self.dataset = store, records, store.dataset

    def read_image(self, index: int) -> bytes:
        return self.records[index]

    def locate(self, index: int) -> tuple[int, int]:
        return self.store.locate(index)

    def where(self, index: int) -> str:
        return self.store.where(index)


def stage_breakdown(config: LoaderConfig, images: int) -> dict:
    """Per-image cost of each stage of our loader, measured alone: record read (LMDB + msgpack, one
    process), decode + augment (our pipeline over records already in memory with the source run
    inline: one thread when the source decodes, else config.threads DALI threads), targets (the
    kernel, per batch)."""
    from tagstream.loader import IMAGENET_MEAN, IMAGENET_STD
    from tagstream.loader.data.store import ShardStore
    from tagstream.loader.data.vocab import Vocab
    from tagstream.loader.pipeline.graph import build_pipeline, start, stop
    from tagstream.loader.pipeline.plan_source import PlanSource
    from tagstream.loader.pipeline.source import SourceSettings, source_decodes
    from tagstream.loader.sampling.sampler import RankSampler

    store = ShardStore(config.dataset)
    ds = store.dataset
    vocab = Vocab(ds, config.vocab)
    b = config.batch_size
    n_batches = max(images // b, 1)
    plan = RankSampler.from_config(config, ds, vocab).plan(0, 0, n_batches * b)
    t0 = time.perf_counter()
    records = {int(i): store.read_image(int(i)) for i in plan}
    read_us = (time.perf_counter() - t0) / len(plan) * 1e6
    decodes = source_decodes(config.device, config.cpu_decoder)
    settings = SourceSettings(
        store=_MemoryStore(store, records),
        plan=_FixedPlan(plan),
        train=True,
        length=len(plan),
        seed=config.seed,
        rank=0,
        image_size=config.image_size,
    )
    source = PlanSource(settings, decode=decodes, antialias=config.antialias)
    pipe = build_pipeline(
        source,
        batch_size=b,
        image_size=config.image_size,
        device="cpu",
        device_id=None,
        workers=0,
        threads=config.threads,
        prefetch=config.prefetch,
        seed=0,
        bytes_per_sample=1 << 16,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        antialias=config.antialias,
    )
    start(pipe, workers=0)
    pipe.run()
    t0 = time.perf_counter()
    for _ in range(n_batches - 1):
        pipe.run()
    decode_us = (time.perf_counter() - t0) / (max(n_batches - 1, 1) * b) * 1e6
    stop(pipe)
    idx = np.asarray(plan[:b], np.int64)
    t0 = time.perf_counter()
    reps = 200
    for _ in range(reps):
        targets(vocab, idx)
    targets_us = (time.perf_counter() - t0) / (reps * b) * 1e6
    return {
        "record_read_us": read_us,
        "decode_augment_us": decode_us,
        "targets_us": targets_us,
        "decode_augment_threads": 1 if decodes else config.threads,
        "decoder": "turbo" if decodes else "dali",
    }


class _FixedPlan:
    def __init__(self, plan: np.ndarray):
        self.indices = plan

    def plan(self, epoch: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self.indices[start:stop]
