"""The decode-only ceiling of `tagstream bench loader`: the same bytes, in memory, fully decoded (no crop, no resize)
by DALI's CPU decoder, by Pillow and by libjpeg-turbo in as many processes as there are usable cores."""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import time
from typing import Callable

import numpy as np

from tagstream.loader.config import LoaderConfig


def usable_cores() -> int:
    """Cores this process may run on (honours taskset / cgroup CPU sets, unlike os.cpu_count)."""
    return len(os.sched_getaffinity(0))


def _read_bytes(config: LoaderConfig, count: int) -> list[bytes]:
    from tagstream.loader.data.store import ShardStore

    store = ShardStore(config.dataset)
    n = len(store.dataset)
    return [store.read_image(i % n) for i in range(count)]


def _pil_decode(data: bytes) -> int:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:  # no draft(): a full-size decode
        return im.convert("RGB").size[0]


def _turbo_decode(data: bytes) -> int:
    from tagstream.loader.pipeline import turbo

    return turbo.decode(data).shape[1]


def _decode_rate(decode: Callable[[bytes], int], data: list[bytes], cores: int) -> float:
    """Images/s of `decode` over `data` in `cores` processes (after one warm-up image each)."""
    with mp.get_context("fork").Pool(cores) as pool:
        pool.map(decode, data[:cores])
        t0 = time.perf_counter()
        pool.map(decode, data, chunksize=16)
        return len(data) / (time.perf_counter() - t0)


def run_ceiling(config: LoaderConfig, images: int, tick: Callable[[int], None]) -> dict:
    """Decode-only: the same bytes, already in memory, fully decoded (no crop, no resize) with all the
    cores, by DALI's CPU decoder (config.threads threads), by Pillow and by libjpeg-turbo called
    directly (loader/pipeline/turbo.py, when built) in `cores` processes; the fastest is the ceiling."""
    from nvidia.dali import fn, pipeline_def, types

    data = _read_bytes(config, images)
    arrays = [np.frombuffer(d, np.uint8) for d in data]
    b = config.batch_size
    n_batches = len(arrays) // b

    @pipeline_def(batch_size=b, num_threads=config.threads, device_id=None, prefetch_queue_depth=2)
    def decode_only():
        jpegs = fn.external_source(
            source=lambda i: arrays[(i % n_batches) * b : (i % n_batches + 1) * b], batch=True, dtype=types.UINT8
        )
        return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)

    pipe = decode_only()
    pipe.build()
    pipe.run()
    t0 = time.perf_counter()
    for _ in range(n_batches):
        pipe.run()
        tick(1)
    dali = n_batches * b / (time.perf_counter() - t0)
    pipe._shutdown()
    from tagstream.loader.pipeline import turbo

    cores = usable_cores()
    rates = {"dali": dali, "pillow": _decode_rate(_pil_decode, data, cores)}
    if turbo.available():
        rates["libjpeg-turbo"] = _decode_rate(_turbo_decode, data, cores)
    tick(n_batches)
    best = max(rates, key=rates.__getitem__)
    return {"images_per_s": rates[best], "by": best, **{f"{k}_images_per_s": v for k, v in rates.items()}}
