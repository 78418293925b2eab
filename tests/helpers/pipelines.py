"""A stand-in plan and small helpers to build and drain a DALI pipeline in loader tests."""

from __future__ import annotations

import numpy as np

from tagstream.loader.pipeline.batch_source import BatchSource
from tagstream.loader.pipeline.graph import build_pipeline, start, stop
from tagstream.loader.pipeline.plan_source import PlanSource
from tagstream.loader.pipeline.source import SourceSettings


def plan_source(*, decode: bool = False, antialias: bool = True, chunk: int = 4096, **settings) -> PlanSource:
    """A PlanSource over SourceSettings(**settings)."""
    return PlanSource(SourceSettings(**settings), decode=decode, antialias=antialias, chunk=chunk)


def batch_source(*, batch_size: int, prefetch: int = 2, max_pixels: int | None = None, **settings) -> BatchSource:
    """A BatchSource over SourceSettings(**settings)."""
    return BatchSource(SourceSettings(**settings), batch_size=batch_size, prefetch=prefetch, max_pixels=max_pixels)


class ModPlan:
    """Stand-in for a sampler: position p of epoch e -> (7p + e) mod n."""

    def __init__(self, n: int):
        self.n = n

    def plan(self, epoch: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        return (np.arange(start, stop, dtype=np.int64) * 7 + epoch) % self.n


def _pipe(source, *, batch: int, size: int, workers: int = 1):
    """A CPU pipeline over a source that runs in worker processes (PlanSource, DecodedBatchSource)."""
    pipe = build_pipeline(
        source,
        batch_size=batch,
        image_size=size,
        device="cpu",
        device_id=None,
        workers=workers,
        threads=1,
        prefetch=2,
        seed=0,
        bytes_per_sample=1 << 14,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    return start(pipe, workers=workers)


def _epoch(pipe) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    while True:
        try:
            images, index = pipe.run()
        except StopIteration:
            pipe.reset()
            return out
        out.append((np.array(images.as_tensor()), np.array(index.as_tensor()).reshape(-1)))


def assert_same_epochs(reference, ours, epochs: int = 2) -> None:
    """Both pipelines give equal, non-empty epochs (indices and images) for `epochs` epochs; then both stop."""
    for _ in range(epochs):
        want, got = _epoch(reference), _epoch(ours)
        assert len(want) == len(got) > 0
        for (images_a, index_a), (images_b, index_b) in zip(want, got):
            np.testing.assert_array_equal(index_a, index_b)
            np.testing.assert_array_equal(images_a, images_b)
    stop(reference)
    stop(ours)


def pattern_image(index: int, w: int, h: int) -> np.ndarray:
    """Gradients in x and y and the index in blue: any change of window, flip or image shows in the pixels."""
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return np.stack([x, y, np.full_like(x, 5 * index % 256)], -1).astype(np.uint8)
