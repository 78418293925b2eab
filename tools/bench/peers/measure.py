"""One contender of `bench loader --peers`, measured in a process of its own (spawned, so no contender inherits
another's imports, threads or memory): its output checked (224x224x3 uint8 batches; the same image cropped
differently in two epochs), then epochs timed back to back (TIMED_IMAGES), with the CPU seconds of the process and all its children
(/proc and reaped children's rusage) and the peak PSS of the process tree (PeakPss: sampled every 0.1 s outside the
timed part, at its start and end within it)."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from tagstream.tools.bench.peers.contenders import LOADERS, PeerRun, as_hwc
from tagstream.tools.bench.peers.formats import file_path

_TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """pid and its live descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:  # gone meanwhile
            continue
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of pid, its live descendants, and the children it has reaped (their rusage)."""
    total = 0.0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    t = os.times()
    return total + t.children_user + t.children_system


def tree_pss_bytes(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


class PeakPss:
    """The peak PSS of this process tree, sampled by a thread until stop(), except while paused().

    Reading smaps_rollup walks a process's page tables: ~50 ms of CPU a sample for our loader's tree (its shard map
    and shared memory), half a core at 10 samples a second, on a 2-core machine a fifth of its throughput. So the
    timed part of every contender runs paused, with one sample as it starts and one as it ends (all its buffers
    are in flight then), and the untimed warm-up epoch is sampled throughout."""

    def __init__(self, every: float = 0.1):
        self.peak, self.every, self._stop = 0, every, threading.Event()
        self._lock = threading.Lock()  # paused() waits out a sample the thread has begun
        self._go = threading.Event()
        self._go.set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._go.wait()
            if not self._stop.is_set():
                self.sample()
            self._stop.wait(self.every)

    def sample(self) -> None:
        with self._lock:
            self.peak = max(self.peak, tree_pss_bytes(os.getpid()))

    @contextmanager
    def paused(self) -> Iterator[None]:
        self._go.clear()
        self.sample()
        try:
            yield
        finally:
            self.sample()
            self._go.set()

    def stop(self) -> int:
        self._stop.set()
        self._go.set()
        self._thread.join()
        return self.peak


def check_batch(images: Any, ids: Any, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch as (n, size, size, 3) uint8 and its sample indices; ValueError naming what is wrong."""
    array = as_hwc(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (size, size, 3):
        raise ValueError(f"output is {array.dtype} {tuple(array.shape)}, not (n, {size}, {size}, 3) uint8")
    ids = np.asarray(ids.cpu() if hasattr(ids, "cpu") else ids).reshape(-1).astype(np.int64)
    if ids.shape[0] != array.shape[0]:
        raise ValueError(f"{ids.shape[0]} indices for {array.shape[0]} images")
    return array.copy(), ids


def crops_differ(first: tuple[np.ndarray, np.ndarray], later: dict[int, np.ndarray]) -> dict:
    """Of the images of epoch 0's first batch that the timed epochs delivered again (each one's first time): how
    many, and how many of them were cropped (or flipped) differently."""
    where = {int(i): k for k, i in enumerate(first[1])}
    differ = sum(not np.array_equal(first[0][where[i]], image) for i, image in later.items())
    return {"common": len(later), "differ": differ}


# A loader's timed epochs run back to back until this many images, at most MAX_TIMED_EPOCHS (3 epochs of the
# 3,000-image dataset): the batches a loader holds ready as the clock starts (ours streams on across epochs, and
# every loader prefetches) are then a small share of what is timed.
TIMED_IMAGES = 9000
MAX_TIMED_EPOCHS = 3


def timed_epochs(images: int) -> int:
    return min(MAX_TIMED_EPOCHS, max(1, -(-TIMED_IMAGES // max(images, 1))))


def time_loader(name: str, run: PeerRun, sampler: PeakPss) -> dict:
    """Open the loader, read epoch 0 whole (warm-up; its first batch checked), then time epochs 1, 2, ... back to back
    (timed_epochs), keeping the images of epoch 0's first batch that they deliver again (a few MB a batch) to check
    the crops changed."""
    t0 = time.perf_counter()
    epochs = LOADERS[name][1](run)
    opened = time.perf_counter() - t0
    first = None
    t0 = time.perf_counter()
    for images, ids in epochs(0):
        if first is None:
            first = check_batch(images, ids, run.image_size)
    warm = time.perf_counter() - t0
    pid = os.getpid()
    n, first_s, again = 0, None, {}
    with sampler.paused():
        cpu0, t0 = tree_cpu_seconds(pid), time.perf_counter()
        for epoch in range(1, 1 + timed_epochs(run.images)):
            for images, ids in epochs(epoch):
                if first_s is None:
                    first_s = time.perf_counter() - t0
                    check_batch(images, ids, run.image_size)
                ids = np.asarray(ids.cpu() if hasattr(ids, "cpu") else ids).reshape(-1)
                for k in np.flatnonzero(np.isin(ids, first[1])):
                    again.setdefault(int(ids[k]), as_hwc(images[k : k + 1])[0].copy())
                n += len(images)
        seconds = time.perf_counter() - t0
        cpu = tree_cpu_seconds(pid) - cpu0
    check = crops_differ(first, again)
    if not check["common"] or check["differ"] * 2 < check["common"]:
        raise ValueError(f"crops do not change across epochs: {check['differ']} of {check['common']} images differ")
    return {
        "images": n,
        "seconds": seconds,
        "images_per_s": n / seconds,
        "cpu_ms_per_image": cpu / n * 1e3,
        "first_batch_s": first_s,
        "open_s": opened,
        "warm_epoch_s": warm,
        "check": check,
    }


_JPEGS: list[bytes] = []  # the ceilings' bytes, inherited by their forked pool


def _decode_pil(i: int) -> tuple[int, ...]:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(_JPEGS[i])) as im:  # no draft(): a full-size decode
        return np.asarray(im.convert("RGB")).shape


def _decode_turbo(i: int) -> tuple[int, ...]:
    from tagstream.loader.pipeline import turbo

    return turbo.decode(_JPEGS[i]).shape


def _decode_torchvision(i: int) -> tuple[int, ...]:
    import torch
    from torchvision.io import decode_jpeg

    return tuple(decode_jpeg(torch.frombuffer(_JPEGS[i], dtype=torch.uint8)).shape)


CEILINGS: dict[str, tuple[str, Callable[[int], tuple[int, ...]]]] = {
    "full-pil": ("full decode only, Pillow", _decode_pil),
    "full-turbo": ("full decode only, libjpeg-turbo (our C binding)", _decode_turbo),
    "full-torchvision": ("full decode only, torchvision.io.decode_jpeg", _decode_torchvision),
}


def time_ceiling(name: str, run: PeerRun, sampler: PeakPss) -> dict:
    """Decode every image whole (no crop, no resize) from memory in `workers` processes."""
    import torch

    torch.set_num_threads(1)
    # torch.frombuffer over read-only bytes warns once a process; decode_jpeg only reads them (this is the
    # contender's own child process, so the filter reaches no one else)
    warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
    _JPEGS[:] = [file_path(run.cache, i).read_bytes() for i in range(run.images)]
    decode = CEILINGS[name][1]
    from tagstream.loader.data.dataset import Dataset

    ds = Dataset(run.dataset)
    w, h = int(ds.index_array(0, "width")[0]), int(ds.index_array(0, "height")[0])
    shape = decode(0)
    if tuple(shape) not in ((h, w, 3), (3, h, w)):
        raise ValueError(f"decoded {tuple(shape)}, the image is {w} x {h}")
    with mp.get_context("fork").Pool(run.workers) as pool:
        pool.map(decode, range(run.workers))
        pid = os.getpid()
        with sampler.paused():
            cpu0, t0 = tree_cpu_seconds(pid), time.perf_counter()
            pool.map(decode, range(run.images), chunksize=16)
            seconds = time.perf_counter() - t0
            cpu = tree_cpu_seconds(pid) - cpu0
    return {
        "images": run.images,
        "seconds": seconds,
        "images_per_s": run.images / seconds,
        "cpu_ms_per_image": cpu / run.images * 1e3,
    }


def _child(name: str, run: PeerRun, conn: Any) -> None:
    # a spawned process's default start method is spawn; the contenders' worker processes start as a user's
    # do on Linux (fork), not by re-importing torch in every worker
    mp.set_start_method("fork", force=True)
    sampler = PeakPss()
    try:
        result = (time_ceiling if name in CEILINGS else time_loader)(name, run, sampler)
    except ImportError as exc:
        result = {"skipped": f"not installed ({exc}); pip install 'tagstream[peers]'"}
    except Exception as exc:  # a peer that breaks is reported in one line; the other contenders go on
        result = {"failed": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    result["peak_pss_bytes"] = sampler.stop()
    conn.send(result)
    conn.close()


def measure(name: str, run: PeerRun, *, timeout: float = 900.0) -> dict:
    """Run one contender in a fresh spawned process; its figures, or {'failed': why}."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(name, run, child), daemon=False)
    proc.start()
    child.close()
    try:
        result = parent.recv() if parent.poll(timeout) else {"failed": f"no result within {timeout:.0f} s"}
    except EOFError:  # it died without a word (a signal, a native crash)
        proc.join(30)
        result = {"failed": f"the process exited with code {proc.exitcode}"}
    proc.join(30)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return result
