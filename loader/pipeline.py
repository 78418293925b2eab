"""The DALI pipelines of one rank, fed by an external source that maps positions of the epoch plan to
records; augmentation parameters are pure functions of (seed, epoch, partition, position in the
partition's plan) (loader.augment, kernels.crops, loader.partitions.stream_keys), so the decoder does a ROI decode of a window we chose instead of `image_random_crop`
drawing its own: the same operation, but resumable without DALI RNG state. DALI is imported only
inside functions.

Two decode placements: DALI's decoder in the pipeline (GPU: nvJPEG "mixed"; CPU on request), fed whole
batches from the training process by loader/feed.py's BatchSource; or, the CPU default, PlanSource's
worker processes decode the window and resize it themselves (loader.turbo), which on a few cores is
twice as fast as DALI's CPU operators; the pipeline then batches and prefetches."""

from __future__ import annotations

import atexit
import os
import signal
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from tagstream.loader import format as fmt
from tagstream.loader import turbo
from tagstream.loader.augment import train_params
from tagstream.loader.lifetime import exit_with_parent
from tagstream.loader.partitions import check_serving, stream_key
from tagstream.loader.store import ShardStore

if TYPE_CHECKING:
    from tagstream.loader.feed import BatchSource

# PlanSource without decoding (the reference for loader/feed.py): the dataset index, the (x, y, w, h)
# crop window and the flip bit travel as one float64 (6,) output (indices are exact below 2^53): each
# output of a per-sample source costs the main process a deserialisation and a feed per sample
TRAIN_OUTPUTS = ("image", "params")
EVAL_OUTPUTS = ("image", "params")  # params: (index, x0, y0, x1, y1), the centre box (turbo.centre_box)
DECODED_OUTPUTS = ("image", "index")  # the source decoded: (size, size, 3) uint8 and the index
_PLACEHOLDER_SIDE = 16
_JPEG_SOI = b"\xff\xd8"

# nvJPEG ("mixed") on the GPU path. The share of images sent to the GPU's hardware JPEG engines (A100,
# H100/H200) rather than CUDA cores: DALI's default, to be tuned on the machine (scripts/gpu-check.sh).
HW_DECODER_LOAD = 0.65
# nvJPEG sizes its buffers for the largest image it has met and reallocates when a larger one comes,
# which is where allocator failures on outliers happen (DALI issue #1137: a 28-megapixel JPEG among
# ImageNet's). Conversion bounds every image (`tagstream convert --max-side`, default 1024: 1 MP);
# the decoder preallocates DEVICE_MEMORY_PADDING a thread, enough for any image up to GPU_MAX_PIXELS
# (3 bytes a pixel), and the GPU source refuses a bigger image by name (loader/feed.py) rather than
# leave it to an allocator failure mid-run.
DEVICE_MEMORY_PADDING = 64 << 20
GPU_MAX_PIXELS = 4096 * 4096


class Plan(Protocol):
    def plan(self, epoch: int, start: int = 0, stop: int | None = None) -> NDArray[np.int64]: ...


@dataclass(frozen=True)
class EvalPlan:
    """Eval order of one rank: its contiguous share of `indices`, padded with -1 to `length` positions."""

    indices: NDArray[np.int64]
    length: int

    def plan(self, epoch: int, start: int = 0, stop: int | None = None) -> NDArray[np.int64]:
        stop = self.length if stop is None else min(stop, self.length)
        out = np.full(max(stop - start, 0), -1, dtype=np.int64)
        real = self.indices[start:stop]
        out[: real.shape[0]] = real
        return out


def eval_resize_size(image_size: int, resize_size: int | None) -> int:
    """The shorter side an eval image is resized to before its centre crop: resize_size, or torchvision's
    convention image_size * 256 / 224 when it is not given."""
    return int(resize_size or round(image_size * 256 / 224))


def placeholder_jpeg() -> bytes:
    """A small grey JPEG decoded in place of eval padding (a per-sample source cannot emit short batches)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (_PLACEHOLDER_SIDE, _PLACEHOLDER_SIDE), (128, 128, 128)).save(buf, "JPEG", quality=75)
    return buf.getvalue()


class PlanSource:
    """The external-source callable: SampleInfo -> (encoded image, (index, x0, y0, x1, y1) as float64)
    for eval, (encoded image, (index, x, y, w, h, flip) as float64) for train, (decoded image, index)
    when it decodes.

    The CPU path's source (it decodes, in worker processes); where DALI decodes, loader/feed.py's
    BatchSource hands whole batches over instead (this per-sample layout stays as its reference).

    Position p of epoch e is `base_position + idx_in_epoch` in the first epoch the pipeline runs and
    `idx_in_epoch` after it, with e = base_epoch + SampleInfo.epoch_idx; positions >= length raise
    StopIteration (length is a multiple of the batch size, so no batch is dropped). Plans are
    fetched in chunks and cached per worker process; nothing here depends on which worker runs a sample.
    A train sample's window and flip are keyed by its partition and position in the partition's plan: a rank
    serving `serves` partitions (`share` samples of each a step) maps its positions to theirs (stream_key),
    so they do not depend on the world size; with one partition (serves=1) the key is (rank, position).

    With `decode_size` set, the source decodes itself (loader.turbo) and returns (image, index): the
    train window resized to decode_size square and mirrored by the flip bit, or the eval centre crop
    (with `dct_scaling`, a region >= 2x decode_size decodes at a reduced DCT scale: turbo.crop_resize).
    """

    batched = False  # build_pipeline: a per-sample source, parallel in worker processes when workers > 0

    def __init__(
        self,
        *,
        store: ShardStore,
        plan: Plan,
        train: bool,
        length: int,
        seed: int,
        rank: int,
        serves: int = 1,
        share: int | None = None,
        base_epoch: int = 0,
        base_position: int = 0,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        chunk: int = 4096,
        decode_size: int | None = None,
        image_size: int = 224,
        resize_size: int | None = None,
        antialias: bool = True,
        dct_scaling: bool = False,
    ):
        if decode_size is not None:
            turbo.require()
        check_serving(serves, share)
        self.store = store
        self.planner = plan
        self.train = train
        self.length = int(length)
        self.seed = int(seed)
        self.rank = int(rank)
        self.serves, self.share = int(serves), share
        self.base_epoch = int(base_epoch)
        self.base_position = int(base_position)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.chunk = int(chunk)
        self.decode_size = None if decode_size is None else int(decode_size)
        self.image_size = int(decode_size or image_size)
        self.resize_size = eval_resize_size(self.image_size, resize_size)
        self.antialias = bool(antialias)
        self.dct_scaling = bool(dct_scaling)
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
        if image[:2] != _JPEG_SOI:
            raise fmt.FormatError(f"{self.store.dataset.root}: {self.store.where(index)}: image is not a JPEG")
        return image

    @property
    def outputs(self) -> tuple[str, ...]:
        if self.decode_size is not None:
            return DECODED_OUTPUTS
        return TRAIN_OUTPUTS if self.train else EVAL_OUTPUTS

    def image_size_of(self, index: int) -> tuple[int, int]:
        shard, local = self.store.locate(index)
        ds = self.store.dataset
        return int(ds.index_array(shard, "width")[local]), int(ds.index_array(shard, "height")[local])

    def sample(self, epoch: int, position: int) -> tuple[np.ndarray, ...]:
        index = self.index_at(epoch, position)
        if index < 0:  # eval padding: decoded, then dropped by the iterator
            if self.decode_size is not None:
                return np.zeros((self.decode_size, self.decode_size, 3), np.uint8), np.array([-1], np.int64)
            side = float(_PLACEHOLDER_SIDE)
            return np.frombuffer(self._placeholder, np.uint8), np.array([-1, 0, 0, side, side], np.float64)
        image = self.image_bytes(index)
        width, height = self.image_size_of(index)
        if not self.train:
            size = self.image_size
            box = turbo.centre_box(width, height, image_size=size, resize_size=self.resize_size)
            if self.decode_size is None:
                return np.frombuffer(image, np.uint8), np.array([index, *box], np.float64)
            try:
                return turbo.box_resize(image, box, size, dct_scaling=self.dct_scaling), np.array([index], np.int64)
            except ValueError as exc:
                raise self.bad(index, exc) from None
        (x, y, w, h), flip = self.train_window(width, height, epoch, position)
        if self.decode_size is not None:
            return self.decode(index, image, (x, y, w, h), flip, antialias=self.antialias), np.array([index], np.int64)
        return np.frombuffer(image, np.uint8), np.array([index, x, y, w, h, flip], np.float64)

    def train_window(
        self, width: int, height: int, epoch: int, position: int
    ) -> tuple[tuple[int, int, int, int], bool]:
        """The crop window and flip of position `position` of this rank's plan of `epoch` (an image width x height)."""
        partition, at = stream_key(self.rank, self.serves, self.share, position)
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

    def bad(self, index: int, exc: Exception) -> fmt.FormatError:
        return fmt.FormatError(f"{self.store.dataset.root}: {self.store.where(index)}: cannot decode: {exc}")

    def decode(
        self, index: int, image: bytes, window: tuple[int, int, int, int], flip: bool, *, antialias: bool
    ) -> np.ndarray:
        try:
            return turbo.crop_resize(
                image, window, self.decode_size, mirror=flip, antialias=antialias, dct_scaling=self.dct_scaling
            )
        except ValueError as exc:
            raise self.bad(index, exc) from None

    def __call__(self, info: Any) -> tuple[np.ndarray, ...]:
        if self._worker_pid != os.getpid():  # the first call in a worker process
            self._worker_pid = os.getpid()
            exit_with_parent()
            # Ctrl-C reaches the whole process group: the trainer stops and closes its workers; a worker that took
            # the signal too would only print a KeyboardInterrupt traceback from DALI's queue
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        epoch, position = self.position_of(info)
        if position >= self.length:
            raise StopIteration
        return self.sample(epoch, position)


def source_node(source: PlanSource | BatchSource, *, workers: int, prefetch: int, bytes_per_sample: int) -> Any:
    """The external_source node of `source`, inside a pipeline definition: a batched source is called once
    per batch in the pipeline's thread, its JPEGs handed over uncopied; a per-sample source runs in
    `workers` processes (parallel, through shared memory), or in the pipeline's thread when workers == 0."""
    from nvidia.dali import fn, types

    decoded = source.decode_size is not None
    if source.batched:
        feed = {"batch": True, "batch_info": True, "no_copy": True}
    elif workers > 0:
        feed = {
            "batch": False,
            "parallel": True,
            "bytes_per_sample_hint": bytes_per_sample,
            "prefetch_queue_depth": prefetch,
        }
    else:
        feed = {"batch": False}
    if source.batched:  # the decoder's inputs ready-made, one array per batch each (see BatchSource)
        dtypes = [types.UINT8, types.INT64, types.FLOAT, types.FLOAT] + ([types.INT32] if source.train else [])
        ndims = [1, 1, 1, 1] + ([0] if source.train else [])
    else:
        dtypes, ndims = [types.UINT8, types.INT64 if decoded else types.FLOAT64], [3 if decoded else 1, 1]
    return fn.external_source(source=source, num_outputs=len(source.outputs), dtype=dtypes, ndim=ndims, **feed)


def train_inputs(source: PlanSource | BatchSource, outs: Any) -> tuple[Any, Any, Any, Any, Any]:
    """(jpegs, index int64 (1,), anchor (x, y) and shape (w, h) float32, flip int32) of a train source's
    outputs: as they come from a batched source; split and cast from the (6,) float64 params of a
    per-sample one (CPU operators, a few µs a sample)."""
    from nvidia.dali import fn, types

    if source.batched:
        return tuple(outs)
    jpegs, params = outs
    window = fn.cast(params[1:6], dtype=types.FLOAT)
    return (
        jpegs,
        fn.cast(params[0:1], dtype=types.INT64),
        window[0:2],
        window[2:4],
        fn.cast(window[4], dtype=types.INT32),
    )


def eval_inputs(source: PlanSource | BatchSource, outs: Any) -> tuple[Any, Any, Any, Any]:
    """(jpegs, index int64 (1,), roi_start (y0, x0), roi_end (y1, x1) float32) of an eval source's
    outputs: the centre box (turbo.centre_box) as DALI's resize takes it."""
    from nvidia.dali import fn, types

    if source.batched:
        return tuple(outs)
    jpegs, params = outs
    box = fn.cast(params[1:5], dtype=types.FLOAT)
    return jpegs, fn.cast(params[0:1], dtype=types.INT64), fn.stack(box[1], box[0]), fn.stack(box[3], box[2])


def build_pipeline(
    source: PlanSource | BatchSource,
    *,
    batch_size: int,
    image_size: int,
    device: str,
    device_id: int | None,
    workers: int,
    threads: int,
    prefetch: int,
    seed: int,
    bytes_per_sample: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    antialias: bool = True,
) -> Any:
    """Define (not build) the pipeline; the caller starts the Python workers, then builds.

    CPU: decoders on "cpu", uint8 NHWC out. GPU: "mixed" decoding, resize and crop_mirror_normalize on
    the GPU, float32 NCHW normalised out. The dataset index always leaves as a CPU int64 (B, 1).
    """
    from nvidia.dali import backend, fn, pipeline_def, types

    gpu = device == "gpu"
    if source.decode_size is not None and gpu:
        raise ValueError("a source that decodes itself is the CPU path; on GPU the pipeline decodes with nvJPEG")
    # fork is cheap but DALI refuses it once CUDA is initialised; spawn on GPU so a rebuild (resume) is always safe
    start_method = "spawn" if gpu or backend.IsDriverInitialized() else "fork"
    # DALI's CPU resize hands a thread `minibatch_size` images (default 32): a batch of 32 would use one thread
    minibatch = max(1, min(32, batch_size // (2 * threads)))
    decoder = "mixed" if gpu else "cpu"
    decoded = source.decode_size is not None
    workers = 0 if source.batched else workers
    # GPU: the hardware decoder where present, buffers preallocated for the largest image allowed
    nvjpeg = {"hw_decoder_load": HW_DECODER_LOAD, "device_memory_padding": DEVICE_MEMORY_PADDING} if gpu else {}

    @pipeline_def(
        batch_size=batch_size,
        # when the source decodes, DALI's threads only gather batches: one is enough, and more compete
        # with the decoding workers for the cores (2 threads cost ~25% of the rate on 2 cores)
        num_threads=1 if decoded else threads,
        device_id=device_id if gpu else None,
        seed=seed,
        prefetch_queue_depth=prefetch,
        py_num_workers=max(workers, 1),
        py_start_method=start_method,
        exec_dynamic=True,
    )
    def graph():
        outs = source_node(source, workers=workers, prefetch=prefetch, bytes_per_sample=bytes_per_sample)
        if decoded:  # the workers decoded, cropped, resized and flipped: batch and prefetch only
            images, index = outs
        elif source.train:
            jpegs, index, anchor, shape, flip = train_inputs(source, outs)
            images = fn.decoders.image_slice(
                jpegs,
                anchor,
                shape,
                device=decoder,
                output_type=types.RGB,
                normalized_anchor=False,
                normalized_shape=False,
                **nvjpeg,
            )
            if gpu:
                images = fn.resize(
                    images, size=[image_size, image_size], interp_type=types.INTERP_LINEAR, antialias=antialias
                )
                images = fn.crop_mirror_normalize(
                    images, mirror=flip, mean=list(mean), std=list(std), dtype=types.FLOAT, output_layout="CHW"
                )
            else:
                # the flip rides on the resize (a reversed ROI) instead of costing another pass over the image
                f = fn.cast(flip, dtype=types.FLOAT)
                images = fn.resize(
                    images,
                    size=[image_size, image_size],
                    interp_type=types.INTERP_LINEAR,
                    antialias=antialias,
                    roi_start=fn.stack(0.0 * f, f),
                    roi_end=fn.stack(1.0 + 0.0 * f, 1.0 - f),
                    roi_relative=True,
                    minibatch_size=minibatch,
                )
        else:  # eval: the centre box of the source (turbo.centre_box), resized with its neighbours
            jpegs, index, roi_start, roi_end = eval_inputs(source, outs)
            images = fn.decoders.image(jpegs, device=decoder, output_type=types.RGB, **nvjpeg)
            images = fn.resize(
                images,
                size=[image_size, image_size],
                interp_type=types.INTERP_LINEAR,
                antialias=True,
                minibatch_size=minibatch,
                roi_start=roi_start,
                roi_end=roi_end,
                roi_relative=False,
            )
            if gpu:
                images = fn.crop_mirror_normalize(
                    images, mean=list(mean), std=list(std), dtype=types.FLOAT, output_layout="CHW"
                )
        return images, index

    return graph()


def start(pipe: Any, *, workers: int) -> Any:
    """Start the Python workers (before any CUDA use on a fork pipeline), then build.

    DALI closes its worker pool from a weakref finaliser, which at interpreter exit can run after
    multiprocessing's exit hook has begun joining those very workers: a hang at exit. An atexit hook
    registered now (so it runs first) closes the pool in time.
    """
    if workers > 0:
        pipe.start_py_workers()
        pool = weakref.ref(pipe._py_pool)
        atexit.register(lambda: (p := pool()) is not None and p.close())
    pipe.build()
    return pipe


def stop(pipe: Any) -> None:
    """Stop a pipeline and its worker processes now."""
    if getattr(pipe, "_py_pool", None) is not None:
        pipe._py_pool.close()
    pipe._shutdown()
