"""DecodedBatchSource: the CPU path's source. DALI's worker processes each take whole batches (a parallel external
source in batch mode): per batch, the plan slice, the crop windows and flips of the whole batch in one kernel call
(as BatchSource's), the JPEGs as views of LMDB's map in one C call a batch (loader/data/records.py), and each window
decoded and resized by the CPU decoder (turbo.py) straight into the batch's one (B, size, size, 3) array.

Why batches, not samples: a per-sample source (PlanSource, its reference) pays per image a Python call, an LMDB
read transaction, a record parse and a copy of the JPEG out of the map, a fresh output array, the crop's draw in
Python and DALI's per-sample hand-off; together ~0.1-0.3 ms an image beside a ~0.7 ms decode (docs/costs.md, docs/loader-bench.md).
Here those are paid once a batch.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tagstream.loader.pipeline import turbo
from tagstream.loader.pipeline.batch_source import BatchPlan
from tagstream.loader.pipeline.lifetime import enter_worker
from tagstream.loader.pipeline.plan_source import DECODED_OUTPUTS
from tagstream.loader.pipeline.source import SourceSettings


class DecodedBatchSource(BatchPlan):
    """The batch-mode parallel external-source callable of the CPU path: BatchInfo -> (images (B, size, size, 3)
    uint8, indices (B, 1) int64), the same samples, windows, flips (train) and centre boxes (eval) as BatchSource
    hands DALI's decoder and PlanSource decodes one by one (the same pixels as PlanSource's, tested). Eval padding
    (index -1) is a black image, dropped by the iterator."""

    decodes = True  # hands over decoded images; the graph only batches and prefetches
    parallel = True  # called in DALI's worker processes, a whole batch a call

    def __init__(
        self,
        settings: SourceSettings,
        *,
        batch_size: int,
        antialias: bool = True,
        dct_scaling: bool = False,
        continuous: bool = False,
    ):
        turbo.require()
        super().__init__(settings, batch_size=batch_size, continuous=continuous)
        self.antialias = bool(antialias)
        self.dct_scaling = bool(dct_scaling)
        self._worker_pid = os.getpid()  # the process that built the source never arms the death signal

    @property
    def outputs(self) -> tuple[str, ...]:
        return DECODED_OUTPUTS

    def __call__(self, info: Any) -> tuple[Any, ...]:
        self._worker_pid = enter_worker(self._worker_pid)
        return super().__call__(info)

    def batch(self, epoch: int, start: int) -> tuple[np.ndarray, np.ndarray]:
        """(images, indices) of plan positions [start, start + B) of `epoch`."""
        stop = min(start + self.batch_size, self.length)
        indices = np.asarray(self.planner.plan(epoch, start, stop), dtype=np.int64)
        n, size = indices.shape[0], self.image_size
        images = np.empty((n, size, size, 3), np.uint8)
        real = np.flatnonzero(indices >= 0) if not self.train else np.arange(n)
        widths, heights = self.sizes(indices[real])
        jpegs, txns = self.store.image_buffers(indices[real], widths, heights)
        try:
            if self.train:
                self._crops(images, indices, jpegs, self.windows(epoch, start, widths, heights))
            else:
                images[np.flatnonzero(indices < 0)] = 0
                self._centres(images, indices, real, jpegs, self.centre_boxes(indices[real], widths, heights))
        finally:
            del jpegs  # views of the transactions' pages: gone before the transactions end
            for txn in txns:
                txn.abort()
        return images, indices.reshape(n, 1)

    def _crops(self, images: np.ndarray, indices: np.ndarray, jpegs: list, windows: np.ndarray) -> None:
        size, antialias, dct = self.image_size, self.antialias, self.dct_scaling
        for i, (jpeg, (x, y, w, h, flip)) in enumerate(zip(jpegs, windows.tolist())):
            try:
                turbo.crop_resize(
                    jpeg, (x, y, w, h), size, mirror=bool(flip), antialias=antialias, dct_scaling=dct, out=images[i]
                )
            except ValueError as exc:
                raise self.bad(int(indices[i]), exc) from None

    def _centres(self, images: np.ndarray, indices: np.ndarray, real: np.ndarray, jpegs: list, boxes: list) -> None:
        size, dct = self.image_size, self.dct_scaling
        for i, jpeg, box in zip(real.tolist(), jpegs, boxes):
            try:
                turbo.box_resize(jpeg, box, size, dct_scaling=dct, out=images[i])
            except ValueError as exc:
                raise self.bad(int(indices[i]), exc) from None
