"""Download a rank's shards of a remote dataset in the background, in the order its plan first reads them.

The loader starts training at once: a worker that needs a shard not yet here fetches it itself (or waits
for the download under way, loader/data/cache.py's lock), so a rank waits only for the shard it needs now,
and that wait is part of the trainer's data-wait. Everything else arrives behind the training.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)
THREADS = 4  # concurrent shard downloads per rank: hides per-request latency, bounded memory (4 x storage.CHUNK)
ORDER_WINDOW = 1 << 16  # plan positions looked at to order the shards by first use


def shards_of_ranges(shard_starts: NDArray[np.int64], ranges: NDArray[np.int64]) -> list[int]:
    """Shards overlapping any [lo, hi) image range (a rank's blocks), ascending."""
    out: set[int] = set()
    for lo, hi in np.asarray(ranges, dtype=np.int64).reshape(-1, 2):
        if hi > lo:
            first = int(np.searchsorted(shard_starts, lo, side="right")) - 1
            last = int(np.searchsorted(shard_starts, hi - 1, side="right")) - 1
            out.update(range(first, last + 1))
    return sorted(out)


def first_use_order(shard_starts: NDArray[np.int64], plan: NDArray[np.int64], shards: Sequence[int]) -> list[int]:
    """`shards` reordered: those the plan slice reads, in order of first read, then the rest in order."""
    plan = np.asarray(plan, dtype=np.int64)
    plan = plan[plan >= 0]  # eval padding
    read = np.searchsorted(shard_starts, plan, side="right") - 1
    _, first = np.unique(read, return_index=True)
    seen = [int(s) for s in read[np.sort(first)]]
    wanted = set(shards)
    head = [s for s in seen if s in wanted]
    rest = [s for s in shards if s not in set(head)]
    return head + rest


def start_prefetch(
    dataset: Any, plan: Any, *, length: int, owned_ranges: NDArray[np.int64] | None = None, limit: int = 0
) -> ShardPrefetcher | None:
    """For a remote dataset (None otherwise): mark the shards this rank reads as in use, make room for them
    in the cache (refusing a limit they cannot fit), and start downloading them, first-read first.

    plan: anything with plan(epoch, start, stop) -> indices (a RankSampler, an EvalPlan) of `length`
    positions; owned_ranges: the [lo, hi) image ranges the rank samples from (RankSampler.owned_ranges());
    without them, the shards of the whole epoch-0 plan (an eval share)."""
    if dataset.mirror is None:
        return None
    starts = dataset.shard_starts
    if owned_ranges is None:
        every = np.asarray(plan.plan(0, 0, length), dtype=np.int64)
        shards = sorted({int(s) for s in np.searchsorted(starts, every[every >= 0], side="right") - 1})
    else:
        shards = shards_of_ranges(starts, owned_ranges)
    entries = [dataset.shards[k] for k in shards]
    dataset.mirror.use(entries)
    dataset.mirror.make_room(entries, limit)
    fetcher = ShardPrefetcher(dataset, shards, start=False)
    fetcher.follow(plan, epoch=0, position=0, length=length)
    fetcher.begin()
    return fetcher


class ShardPrefetcher:
    """Background threads that make each given shard ready (remote.Mirror.ensure_shard), queue order first.

    `prioritize(order)` moves pending shards to the front (a resumed run, a new epoch). A failure is kept
    and raised by `raise_if_failed()` in the main thread; the other shards go on downloading.
    """

    def __init__(self, dataset: Any, shards: Sequence[int], *, threads: int = THREADS, start: bool = True):
        self.dataset = dataset
        self._pending: deque[int] = deque(shards)
        self._lock = threading.Lock()
        self._stop = False
        self.error: BaseException | None = None
        self.downloaded: list[int] = []  # shards this process fetched (the others were already cached)
        self.bytes = 0
        self.started = time.monotonic()
        self.finished: float | None = None
        self._active = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"shard-prefetch-{i}", daemon=True) for i in range(threads)
        ]
        if start:
            self.begin()

    def begin(self) -> None:
        for t in self._threads:
            t.start()

    def follow(self, plan: Any, *, epoch: int, position: int, length: int) -> None:
        """Put the pending shards the plan reads next (from `position` of `epoch`) first, in order of first read."""
        with self._lock:
            pending = list(self._pending)
        if pending:
            window = plan.plan(epoch, position, min(length, position + ORDER_WINDOW))
            self.prioritize(first_use_order(self.dataset.shard_starts, window, pending))

    def prioritize(self, order: Sequence[int]) -> None:
        with self._lock:
            first = [s for s in order if s in self._pending]
            rest = [s for s in self._pending if s not in set(first)]
            self._pending = deque(first + rest)

    def _next(self) -> int | None:
        with self._lock:
            if self._stop or not self._pending:
                return None
            self._active += 1
            return self._pending.popleft()

    def _work(self) -> None:
        mirror = self.dataset.mirror
        while (shard := self._next()) is not None:
            entry = self.dataset.shards[shard]
            try:
                if mirror.ensure_shard(entry):
                    with self._lock:
                        self.downloaded.append(shard)
                        self.bytes += int(entry.get("bytes") or 0)
            except Exception as exc:  # noqa: BLE001 - kept for the main thread; a worker needing the shard retries it
                log.warning("prefetching shard %s failed: %s", entry["name"], exc)
                with self._lock:
                    self.error = self.error or exc
            finally:
                with self._lock:
                    self._active -= 1
                    if not self._pending and not self._active:
                        self.finished = time.monotonic()

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued shard is handled (True) or timeout seconds pass (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def close(self) -> None:
        """Stop taking new shards (a download under way finishes in its daemon thread, or dies with the process)."""
        with self._lock:
            self._stop = True
            self._pending.clear()

    def stats(self) -> dict[str, float]:
        with self._lock:
            end = self.finished or time.monotonic()
            return {
                "shards_downloaded": len(self.downloaded),
                "bytes_downloaded": self.bytes,
                "seconds": round(end - self.started, 3),
                "done": float(self.finished is not None),
            }
