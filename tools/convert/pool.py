"""The decoding workers of a conversion: a process pool, and the results of its items in input order with a bounded
window in flight (batches, and image bytes carried to the workers)."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from tagstream.loader.pipeline import exit_with_parent
from tagstream.tools.convert.image import ImageOptions, Item, ItemResult, process_batch, process_item
from tagstream.tools.convert.inputs.bounds import IN_FLIGHT_BYTES

BATCH = 16  # items per task sent to a worker
WINDOW = 4  # tasks in flight per worker: bounds memory whatever the input size


def process_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for a conversion's jobs (decoding, a merge's shards): started by a forkserver (no fork:
    LMDB handles and threads), each exiting with its parent."""
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=exit_with_parent, initargs=(os.getpid(),))


def _held(item: Item) -> int:
    """Image bytes an item carries to a worker (a tar member streamed, a Parquet cell)."""
    return len(item.data) if item.data is not None else 0


def _batches(items: Iterable[Item]) -> Iterator[list[Item]]:
    """Items in batches of BATCH, cut early when a batch's image bytes reach IN_FLIGHT_BYTES / 8."""
    batch: list[Item] = []
    held = 0
    for item in items:
        batch.append(item)
        held += _held(item)
        if len(batch) == BATCH or held >= IN_FLIGHT_BYTES // 8:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


def results(items: Iterable[Item], options: ImageOptions, workers: int) -> Iterator[ItemResult]:
    """Process items in input order; with workers > 1 a bounded window of batches is in flight: at most
    workers x WINDOW batches, and at most IN_FLIGHT_BYTES of image bytes (plus one batch) handed over and not
    yet returned, so inputs that carry their images (tars, tables) cost memory by the window, not the input."""
    if workers == 1:
        for item in items:
            yield process_item(item, options)
        return
    with process_pool(workers) as pool:
        pending: deque = deque()
        held = 0
        for batch in _batches(items):
            size = sum(_held(item) for item in batch)
            pending.append((batch, pool.submit(process_batch, batch, options), size))
            held += size
            while pending and (len(pending) >= workers * WINDOW or held > IN_FLIGHT_BYTES):
                done, future, size = pending.popleft()
                held -= size
                yield from _batch_result(done, future)
        while pending:
            done, future, _ = pending.popleft()
            yield from _batch_result(done, future)


def _batch_result(batch: list[Item], future) -> list[ItemResult]:
    try:
        return future.result()
    except BrokenProcessPool:
        raise RuntimeError(
            f"a worker process died while decoding input lines {batch[0].line}..{batch[-1].line} (a decoder crash?); "
            "rerun the same command to resume, with --workers 1 to find the input that kills it"
        ) from None
