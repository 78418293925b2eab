"""The per-sample decode source: plan position -> record and its parameters, called by DALI in worker processes (with
decode=True it also decodes the crop window with the CPU decoder, loader/pipeline/turbo.py): the reference both batch
sources are tested against (the CPU path's DecodedBatchSource decodes the same windows a batch a call:
loader/pipeline/decode_source.py), and the per-sample contender of `bench loader --feed` and `--stages`."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data import format as fmt
from tagstream.loader.pipeline import turbo
from tagstream.loader.pipeline.augment import train_params
from tagstream.loader.pipeline.lifetime import enter_worker
from tagstream.loader.pipeline.source import JPEG_SOI, PLACEHOLDER_SIDE, DecodeSource, SourceSettings, placeholder_jpeg
from tagstream.loader.sampling.partitions import partition_position

# Without decoding (the reference for loader/pipeline/batch_source.py): the dataset index, the (x, y, w, h) crop
# window and the flip bit travel as one float64 (6,) output (indices are exact below 2^53): each output of a
# per-sample source costs the main process a deserialisation and a feed per sample
TRAIN_OUTPUTS = ("image", "params")
EVAL_OUTPUTS = ("image", "params")  # params: (index, x0, y0, x1, y1), the centre box (turbo.centre_box)
DECODED_OUTPUTS = ("image", "index")  # the source decoded: (size, size, 3) uint8 and the index


class PlanSource(DecodeSource):
    """The external-source callable: SampleInfo -> (encoded image, (index, x0, y0, x1, y1) as float64)
    for eval, (encoded image, (index, x, y, w, h, flip) as float64) for train, (decoded image, index)
    when it decodes.

    The reference of the batch sources: where DALI decodes, loader/pipeline/batch_source.py's BatchSource hands whole
    batches over instead; on the CPU path, loader/pipeline/decode_source.py's DecodedBatchSource decodes them.

    Position p of epoch e is `base_position + idx_in_epoch` in the first epoch the pipeline runs and
    `idx_in_epoch` after it, with e = base_epoch + SampleInfo.epoch_idx; positions >= length raise
    StopIteration (length is a multiple of the batch size, so no batch is dropped). Plans are
    fetched in chunks and cached per worker process; nothing here depends on which worker runs a sample.
    A train sample's window and flip are keyed by its partition and position in the partition's plan: a rank
    serving `serves` partitions (`share` samples of each a step) maps its positions to theirs (partition_position),
    so they do not depend on the world size; with one partition (serves=1) the key is (rank, position).

    With `decode=True`, the source decodes itself (loader/pipeline/turbo.py) and returns (image, index): the
    train window resized to image_size square and mirrored by the flip bit, or the eval centre crop (with
    `dct_scaling`, a region >= 2x image_size decodes at a reduced DCT scale: turbo.crop_resize).
    """

    batched = False  # a per-sample source, parallel in worker processes when workers > 0

    def __init__(
        self,
        settings: SourceSettings,
        *,
        decode: bool = False,
        antialias: bool = True,
        dct_scaling: bool = False,
        chunk: int = 4096,
    ):
        if decode:
            turbo.require()
        super().__init__(settings)
        self.decodes = bool(decode)
        self.scale = tuple(settings.scale)
        self.ratio = tuple(settings.ratio)
        self.chunk = int(chunk)
        self.antialias = bool(antialias)
        self.dct_scaling = bool(dct_scaling)  # a region >= 2x the output decodes at a reduced DCT scale (turbo)
        self._cached: tuple[int, int, NDArray[np.int64]] | None = None
        self._worker_pid = os.getpid()  # the process that built the source never arms the death signal
        self._placeholder = placeholder_jpeg()

    def index_at(self, epoch: int, position: int) -> int:
        cached = self._cached
        if cached is None or cached[0] != epoch or not cached[1] <= position < cached[1] + cached[2].shape[0]:
            start = position - position % self.chunk
            chunk = np.asarray(self.planner.plan(epoch, start, min(start + self.chunk, self.length)), dtype=np.int64)
            cached = self._cached = (epoch, start, chunk)
        return int(cached[2][position - cached[1]])

    def position_of(self, info: Any) -> tuple[int, int]:
        """SampleInfo -> (epoch, position in that epoch's plan)."""
        first = info.epoch_idx == 0
        return self.base_epoch + info.epoch_idx, info.idx_in_epoch + (self.base_position if first else 0)

    def image_bytes(self, index: int) -> bytes:
        image = self.store.read_image(index)
        if image[:2] != JPEG_SOI:
            raise fmt.FormatError(f"{self.store.dataset.root}: {self.store.where(index)}: image is not a JPEG")
        return image

    @property
    def outputs(self) -> tuple[str, ...]:
        if self.decodes:
            return DECODED_OUTPUTS
        return TRAIN_OUTPUTS if self.train else EVAL_OUTPUTS

    def image_size_of(self, index: int) -> tuple[int, int]:
        shard, local = self.store.locate(index)
        ds = self.store.dataset
        return int(ds.index_array(shard, "width")[local]), int(ds.index_array(shard, "height")[local])

    def sample(self, epoch: int, position: int) -> tuple[np.ndarray, ...]:
        index = self.index_at(epoch, position)
        if index < 0:  # eval padding: decoded, then dropped by the iterator
            if self.decodes:
                return np.zeros((self.image_size, self.image_size, 3), np.uint8), np.array([-1], np.int64)
            side = float(PLACEHOLDER_SIDE)
            return np.frombuffer(self._placeholder, np.uint8), np.array([-1, 0, 0, side, side], np.float64)
        image = self.image_bytes(index)
        width, height = self.image_size_of(index)
        if not self.train:
            size = self.image_size
            if self.content_box:
                content = self.store.dataset.content_boxes(np.array([index]))[0]
                box = turbo.centre_box_within(content, image_size=size, resize_size=self.resize_size)
            else:
                box = turbo.centre_box(width, height, image_size=size, resize_size=self.resize_size)
            if not self.decodes:
                return np.frombuffer(image, np.uint8), np.array([index, *box], np.float64)
            try:
                return turbo.box_resize(image, box, size, dct_scaling=self.dct_scaling), np.array([index], np.int64)
            except ValueError as exc:
                raise self.bad(index, exc) from None
        (x, y, w, h), flip = self.train_window(width, height, epoch, position)
        if self.decodes:
            return self.decode(index, image, (x, y, w, h), flip, antialias=self.antialias), np.array([index], np.int64)
        return np.frombuffer(image, np.uint8), np.array([index, x, y, w, h, flip], np.float64)

    def train_window(
        self, width: int, height: int, epoch: int, position: int
    ) -> tuple[tuple[int, int, int, int], bool]:
        """The crop window and flip of position `position` of this rank's plan of `epoch` (an image width x height)."""
        partition, at = partition_position(self.rank, self.serves, self.share, position)
        return train_params(
            width,
            height,
            seed=self.seed,
            epoch=epoch,
            partition=partition,
            position=at,
            scale=self.scale,
            ratio=self.ratio,
        )

    def decode(
        self, index: int, image: bytes, window: tuple[int, int, int, int], flip: bool, *, antialias: bool
    ) -> np.ndarray:
        try:
            return turbo.crop_resize(
                image, window, self.image_size, mirror=flip, antialias=antialias, dct_scaling=self.dct_scaling
            )
        except ValueError as exc:
            raise self.bad(index, exc) from None

    def __call__(self, info: Any) -> tuple[np.ndarray, ...]:
        self._worker_pid = enter_worker(self._worker_pid)
        epoch, position = self.position_of(info)
        if position >= self.length:
            raise StopIteration
        return self.sample(epoch, position)
