"""BatchSource: the external source of the paths where DALI decodes (GPU; CPU with cpu_decoder="dali"),
called once per batch in the thread that runs the pipeline, with no worker processes.

Per batch: the plan slice, the crop windows and flips of the whole batch in one kernel call
(kernels/crops.py, the same numbers as loader/pipeline/augment.py, keyed by partition: loader/sampling/partitions.py), the records read in one LMDB read
transaction per shard and one C call for the batch's reads (loader/data/records.py), and the JPEG bytes
handed to DALI as views of LMDB's memory map (`no_copy`): nothing is copied, pickled or sent between
processes, so the CPU it costs a sample is a fraction of the per-sample parallel source's, with no worker
processes (measured: docs/loader-bench.md, `tagstream bench loader --feed`).
The trade-off: the source runs in the trainer's thread (inside `pipeline.run()`), so it must stay cheap;
the CPU path, whose source decodes, keeps worker processes and hands them whole batches (decode_source.py).

Lifetime: DALI reads the views after the call returns (up to `prefetch` batches later), so the source
keeps each batch's views and read transactions for prefetch + 2 calls; LMDB keeps a read transaction's
pages valid, and the environments stay open for the life of the process (loader/data/store.py).
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tagstream.kernels.crops import ratio_args, stream_prefixes, train_windows_keyed
from tagstream.loader.data import format as fmt
from tagstream.loader.pipeline import turbo
from tagstream.loader.pipeline.source import PLACEHOLDER_SIDE, DecodeSource, SourceSettings, placeholder_jpeg
from tagstream.loader.sampling.partitions import partition_positions

# the decoder's inputs, each one array per batch: in batch mode an output costs per batch, not per
# sample, so the source hands over what the operators take instead of one array that DALI's CPU
# operators would slice and cast per sample (what that cost: docs/costs.md)
TRAIN_OUTPUTS = ("image", "index", "anchor", "shape", "flip")  # int64 (1,), float32 (x, y), (w, h), int32 ()
EVAL_OUTPUTS = ("image", "index", "roi_start", "roi_end")  # int64 (1,), float32 (y0, x0), (y1, x1)


class BatchPlan(DecodeSource):
    """What both batch sources share: BatchInfo -> plan positions [start, start + B) of an epoch (`batch`), the crop
    windows and flips of a batch in one kernel call (`windows`), and the images' sizes from the index (`sizes`).
    Batch i of the pipeline's first epoch covers plan positions base_position + i*B onwards of epoch
    base_epoch; after that, epoch base_epoch + epoch_idx from position 0; a batch starting at or past
    `length` raises StopIteration (length is a multiple of B). A rank serving `serves` partitions (each
    giving `share` samples a step) keys each sample's window by its partition (see PlanSource). With `max_pixels`,
    an image with more pixels is a FormatError naming it. Holds no DALI object, so it pickles (spawned workers).

    `continuous` (train): the stream never stops at an epoch's end; batch i is global position base_position + i*B
    counted on from base_epoch's start, so epoch e + 1 follows epoch e within one DALI epoch and the workers prefetch
    its first batches while the trainer takes e's last (no drain and refill at every epoch's start)."""

    batched = True  # called once a batch

    def __init__(
        self, settings: SourceSettings, *, batch_size: int, max_pixels: int | None = None, continuous: bool = False
    ):
        if batch_size < 1 or settings.length % batch_size:
            raise ValueError(f"length={settings.length} must be a multiple of batch_size={batch_size} >= 1")
        super().__init__(settings)
        self.batch_size = int(batch_size)
        self.scale = np.array(settings.scale, np.float64)
        self.ratio = ratio_args(settings.ratio)
        self.max_pixels = None if max_pixels is None else int(max_pixels)
        self.continuous = bool(continuous)

    def __call__(self, info: Any) -> tuple[Any, ...]:
        if self.continuous:  # never reset: DALI's epoch_idx stays 0 and its iteration counts on across our epochs
            if self.length == 0:
                raise StopIteration
            position = self.base_position + info.iteration * self.batch_size
            return self.batch(self.base_epoch + position // self.length, position % self.length)
        first = info.epoch_idx == 0
        start = info.iteration * self.batch_size + (self.base_position if first else 0)
        if start >= self.length:
            raise StopIteration
        return self.batch(self.base_epoch + info.epoch_idx, start)

    def batch(self, epoch: int, start: int) -> tuple[Any, ...]:
        raise NotImplementedError

    def windows(
        self, epoch: int, start: int, widths: NDArray[np.int64], heights: NDArray[np.int64]
    ) -> NDArray[np.int64]:
        """(x, y, w, h, flip) rows of plan positions start, start + 1, ... of `epoch` (images widths x heights),
        each keyed by (partition, position in the partition's plan) (loader/sampling/partitions.py partition_positions)."""
        partitions, positions = partition_positions(self.rank, self.serves, self.share, start, start + widths.shape[0])
        out = np.empty((widths.shape[0], 5), np.int64)
        train_windows_keyed(
            widths, heights, positions, stream_prefixes(self.seed, epoch, partitions), self.scale, self.ratio, out
        )
        return out

    def centre_boxes(
        self, indices: NDArray[np.int64], widths: NDArray[np.int64], heights: NDArray[np.int64]
    ) -> list[tuple[float, float, float, float]]:
        """The eval centre box (x0, y0, x1, y1) of each image (turbo.centre_box; with `content_box`, of the content
        box inside the image's uniform borders: turbo.centre_box_within)."""
        size, resize = self.image_size, self.resize_size
        if self.content_box:
            return [
                turbo.centre_box_within(c, image_size=size, resize_size=resize)
                for c in self.store.dataset.content_boxes(indices).tolist()
            ]
        return [
            turbo.centre_box(w, h, image_size=size, resize_size=resize)
            for w, h in zip(widths.tolist(), heights.tolist())
        ]

    def sizes(self, indices: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(widths, heights) of the images, from the memory-mapped index; checks `max_pixels`."""
        ds = self.store.dataset
        widths, heights = ds.image_sizes(indices)
        if self.max_pixels is not None:
            big = np.flatnonzero(widths * heights > self.max_pixels)
            if big.size:
                i = int(big[0])
                raise fmt.FormatError(
                    f"{ds.root}: {self.store.where(int(indices[i]))}: {widths[i]}x{heights[i]} is more than the "
                    f"{self.max_pixels:,} pixels the GPU decoder is sized for; convert with --max-side (default 1024)"
                )
        return widths, heights


class BatchSource(BatchPlan):
    """The batch-mode external-source callable where DALI decodes: BatchInfo -> the batch's TRAIN_OUTPUTS or
    EVAL_OUTPUTS, called in the pipeline's thread.

    The same samples, windows and flips (train) or centre boxes (eval, turbo.centre_box) as PlanSource
    gives per sample, in the form pipeline.train_inputs / eval_inputs make of PlanSource's params (positions:
    BatchPlan). Eval padding (index -1) gets a small grey JPEG, as with PlanSource.
    """

    decodes = False  # DALI decodes the JPEG views it hands over

    def __init__(
        self,
        settings: SourceSettings,
        *,
        batch_size: int,
        prefetch: int = 2,
        max_pixels: int | None = None,
        continuous: bool = False,
    ):
        super().__init__(settings, batch_size=batch_size, max_pixels=max_pixels, continuous=continuous)
        self._keep: collections.deque = collections.deque(maxlen=int(prefetch) + 2)
        from nvidia.dali.tensors import TensorCPU, TensorListCPU

        self._placeholder = TensorCPU(np.frombuffer(placeholder_jpeg(), np.uint8))
        self._tensor, self._tensor_list = TensorCPU, TensorListCPU

    @property
    def outputs(self) -> tuple[str, ...]:
        return TRAIN_OUTPUTS if self.train else EVAL_OUTPUTS

    def batch(self, epoch: int, start: int) -> tuple[Any, ...]:
        """The outputs for plan positions [start, start + B) of `epoch`: the JPEGs (a DALI TensorListCPU
        of views), then the train window or eval box arrays."""
        stop = min(start + self.batch_size, self.length)
        indices = np.asarray(self.planner.plan(epoch, start, stop), dtype=np.int64)
        n = indices.shape[0]
        if self.train:
            widths, heights = self.sizes(indices)
            windows = self.windows(epoch, start, widths, heights)
            tensors, txns = self.store.image_buffers(indices, widths, heights, wrap=self._tensor)
            rest = (
                windows[:, 0:2].astype(np.float32),
                windows[:, 2:4].astype(np.float32),
                windows[:, 4].astype(np.int32),
            )
        else:
            real = indices >= 0
            widths, heights = self.sizes(indices[real])
            box = np.empty((n, 4), np.float64)  # x0, y0, x1, y1 in float64 as PlanSource's, then float32 as its cast
            box[~real] = (0.0, 0.0, PLACEHOLDER_SIDE, PLACEHOLDER_SIDE)
            if real.any():
                box[real] = self.centre_boxes(indices[real], widths, heights)
            box32 = box.astype(np.float32)
            read, txns = self.store.image_buffers(indices[real], widths, heights, wrap=self._tensor)
            tensors = [self._placeholder] * n
            for i, tensor in zip(np.flatnonzero(real).tolist(), read):
                tensors[i] = tensor
            rest = (box32[:, 1::-1].copy(), box32[:, 3:1:-1].copy())
        # a batch of views, not copies (contiguous=False); built here, so DALI skips its per-sample checks
        jpegs = self._tensor_list(tensors, contiguous=False)
        outputs = (jpegs, indices.reshape(n, 1), *rest)
        self._keep.append((outputs, tensors, txns))
        return outputs
