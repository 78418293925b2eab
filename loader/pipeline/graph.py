"""The DALI graphs of one rank, fed by a decode source (loader/pipeline/source.py) that maps positions of the epoch
plan to records. Crop windows are pure functions of (seed, epoch, partition, position in the partition's plan)
(augment.py, kernels/crops.py, loader/sampling/partitions.py), so the decoder does a ROI decode of a window we chose
instead of `image_random_crop` drawing its own: the same operation, resumable without DALI RNG state. DALI is
imported only inside functions.

Two decode placements: the GPU decode graph (nvJPEG "mixed", or DALI's CPU decoder on request), fed whole batches from
the training process by the batch source; or, the CPU default, the per-sample source's worker processes decode the
window and resize it themselves (turbo.py) and the graph only batches and prefetches."""

from __future__ import annotations

import atexit
import weakref
from typing import Any

from tagstream.loader.pipeline.source import DecodeSource

# nvJPEG ("mixed") on the GPU path. The share of images sent to the GPU's hardware JPEG engines (A100,
# H100/H200) rather than CUDA cores: DALI's default, to be tuned on the machine (scripts/gpu-check.sh).
HW_DECODER_LOAD = 0.65
# nvJPEG sizes its buffers for the largest image it has met and reallocates when a larger one comes,
# which is where allocator failures on outliers happen (DALI issue #1137: a 28-megapixel JPEG among
# ImageNet's). Conversion bounds every image (`tagstream convert --max-side`, default 1024: 1 MP);
# the decoder preallocates DEVICE_MEMORY_PADDING a thread, enough for any image up to GPU_MAX_PIXELS
# (3 bytes a pixel), and the GPU source refuses a bigger image by name (loader/pipeline/batch_source.py) rather than
# leave it to an allocator failure mid-run.
DEVICE_MEMORY_PADDING = 64 << 20
GPU_MAX_PIXELS = 4096 * 4096


def source_node(source: DecodeSource, *, workers: int, prefetch: int, bytes_per_sample: int) -> Any:
    """The external_source node of `source`, inside a pipeline definition: a batched source that decodes runs in
    `workers` processes, a whole batch each call (DecodedBatchSource, the CPU path); a batched source handing DALI
    JPEGs is called once per batch in the pipeline's thread, its JPEGs handed over uncopied; a per-sample source runs
    in `workers` processes (parallel, through shared memory); with workers == 0, either runs in the pipeline's
    thread."""
    from nvidia.dali import fn, types

    decoded = source.decodes
    if source.batched and decoded and workers > 0:  # whole batches decoded in the worker processes
        # every worker busy: as many batches in flight as workers, at least `prefetch`
        feed = {
            "batch": True,
            "batch_info": True,
            "parallel": True,
            "bytes_per_sample_hint": bytes_per_sample,
            "prefetch_queue_depth": max(prefetch, workers),
        }
    elif source.batched and decoded:
        feed = {"batch": True, "batch_info": True}
    elif source.batched:
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
    if source.batched and not decoded:  # the decoder's inputs ready-made, one array per batch each (see BatchSource)
        dtypes = [types.UINT8, types.INT64, types.FLOAT, types.FLOAT] + ([types.INT32] if source.train else [])
        ndims = [1, 1, 1, 1] + ([0] if source.train else [])
    else:
        dtypes, ndims = [types.UINT8, types.INT64 if decoded else types.FLOAT64], [3 if decoded else 1, 1]
    return fn.external_source(source=source, num_outputs=len(source.outputs), dtype=dtypes, ndim=ndims, **feed)


def train_inputs(source: DecodeSource, outs: Any) -> tuple[Any, Any, Any, Any, Any]:
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


def eval_inputs(source: DecodeSource, outs: Any) -> tuple[Any, Any, Any, Any]:
    """(jpegs, index int64 (1,), roi_start (y0, x0), roi_end (y1, x1) float32) of an eval source's
    outputs: the centre box (turbo.centre_box) as DALI's resize takes it."""
    from nvidia.dali import fn, types

    if source.batched:
        return tuple(outs)
    jpegs, params = outs
    box = fn.cast(params[1:5], dtype=types.FLOAT)
    return jpegs, fn.cast(params[0:1], dtype=types.INT64), fn.stack(box[1], box[0]), fn.stack(box[3], box[2])


def build_pipeline(
    source: DecodeSource,
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
    if source.decodes and gpu:
        raise ValueError("a source that decodes itself is the CPU path; on GPU the pipeline decodes with nvJPEG")
    # fork is cheap but DALI refuses it once CUDA is initialised; spawn on GPU so a rebuild (resume) is always safe
    start_method = "spawn" if gpu or backend.IsDriverInitialized() else "fork"
    # DALI's CPU resize hands a thread `minibatch_size` images (default 32): a batch of 32 would use one thread
    minibatch = max(1, min(32, batch_size // (2 * threads)))
    decoder = "mixed" if gpu else "cpu"
    decoded = source.decodes
    workers = 0 if source.batched and not decoded else workers  # BatchSource runs in this thread
    # GPU: the hardware decoder where present, buffers preallocated for the largest image allowed
    nvjpeg = {"hw_decoder_load": HW_DECODER_LOAD, "device_memory_padding": DEVICE_MEMORY_PADDING} if gpu else {}

    @pipeline_def(
        batch_size=batch_size,
        # when the source decodes, DALI's threads only gather batches: one is enough, and more compete
        # with the decoding workers for the cores (what 2 threads cost on 2 cores: docs/costs.md)
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


def worker_processes(pipe: Any) -> list:
    """The multiprocessing.Process objects of a started pipeline's Python workers ([] without workers): DALI's pool
    keeps them (ProcPool._processes); its public `pids()` cannot tell how a worker ended."""
    pool = getattr(getattr(pipe, "_py_pool", None), "pool", None)
    return list(getattr(pool, "_processes", []))


def stop(pipe: Any, *, broken: bool = False, grace: float = 2.0) -> None:
    """Stop a pipeline and its worker processes now, waiting on nothing a dead worker may hold.

    DALI's own close joins its observer thread, which closes the pool's queues under their locks: a worker killed
    while holding one (SIGKILL, the OOM killer) makes that wait forever. So the observer gets `grace` seconds plus
    one a worker (it joins each for up to 1 s), then every worker still there is killed and joined here, and the
    observer, if blocked, is left behind (a daemon thread). `broken` (a worker is known dead): the others are
    killed first and the observer gets half a second. The pool is marked closed, so neither DALI's finaliser nor the exit hook waits on it again."""
    pool = getattr(getattr(pipe, "_py_pool", None), "pool", None)
    observer = getattr(pool, "_observer", None)
    if observer is not None:
        processes = worker_processes(pipe)
        pool._observer = None  # ProcPool.close() is a no-op from now on
        if broken:
            for process in processes:
                process.kill()  # SIGKILL, unless already reaped
        observer.interrupt_pipe.send(None)  # the observer closes the queues and joins or terminates the workers
        # after a death the observer is done at once, or blocked for good on a lock the dead worker held
        observer.thread.join(0.5 if broken else grace + len(processes))
        for process in processes:
            if observer.thread.is_alive():
                process.kill()
            process.join(grace)  # reaped here, or already by the observer
    pipe._shutdown()
