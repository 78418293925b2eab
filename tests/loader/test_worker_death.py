"""A worker process that dies under a running loader is named (pid, exit signal) instead of hanging the loader or
surfacing as DALI's anonymous pool error: loader/pipeline/lifetime.py's WorkerWatch, through the real loader and
on plain processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from multiprocessing.connection import wait
from pathlib import Path

import pytest

from tagstream.loader import LoaderConfig, WorkerDied, build_loader
from tagstream.loader.pipeline.graph import worker_processes
from tagstream.loader.pipeline.lifetime import PoolBroken, WorkerWatch, exit_description
from tests.helpers.datasets import make_index_dataset


def _gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped by its parent counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _wait_gone(pid: int, bound: float = 30.0) -> None:
    deadline = time.monotonic() + bound
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid), f"process {pid} still runs {bound} s after SIGKILL"


@pytest.fixture
def loader(tmp_path):
    ds = make_index_dataset(tmp_path / "ds", n=64, shard_size=32)
    config = LoaderConfig(
        dataset=str(ds.root), vocab="v", batch_size=8, image_size=16, workers=2, threads=1, cpu_decoder="turbo"
    )
    loader = build_loader(config)
    yield loader
    loader.close()


def test_exit_codes_read_as_words():
    assert exit_description(-9) == "killed by signal 9 (SIGKILL)"
    assert exit_description(-15) == "killed by signal 15 (SIGTERM)"
    assert exit_description(1) == "exited with status 1"
    assert exit_description(None) == "ended (exit status unknown)"


@pytest.mark.timeout(180)
def test_a_worker_killed_between_batches_is_named_by_the_next_batch(loader):
    it = iter(loader)
    next(it)
    workers = worker_processes(loader._pipe)
    assert len(workers) == 2
    victim = workers[1].pid
    os.kill(victim, signal.SIGKILL)
    # gone: its last thread has exited too (a zombie leader can wait for its threads to exit); batches made before
    # may still come, but none after
    assert wait([workers[1].sentinel], 30)
    with pytest.raises(WorkerDied) as caught:
        next(it)
    message = str(caught.value)
    assert f"loader worker process {victim} killed by signal 9 (SIGKILL) at epoch 0, step 1 of 8" in message
    assert len(message.splitlines()) == 1
    for p in workers:  # the loader stopped the others and closed the pipeline
        _wait_gone(p.pid)
    assert loader._pipe is None
    loader.set_epoch(0)  # and it starts again: a fresh pipeline, fresh workers
    assert next(iter(loader)).indices.shape == (8,)
    assert {p.pid for p in worker_processes(loader._pipe)}.isdisjoint({p.pid for p in workers})


@pytest.mark.timeout(180)
def test_a_worker_killed_while_the_loader_waits_is_named_not_a_hang(loader):
    """The kill lands while batches are being made: whether the loader is waiting for results (DALI's pool error) or
    handing a task to the dead worker's queue (blocked until the watch interrupts it), the error names the worker."""
    victim = None
    with pytest.raises(WorkerDied) as caught:
        for epoch in range(1000):  # far more batches than 0.2 s gives
            loader.set_epoch(epoch)
            for _ in loader:
                if victim is None:
                    victim = worker_processes(loader._pipe)[0].pid
                    threading.Timer(0.2, os.kill, (victim, signal.SIGKILL)).start()
    assert f"loader worker process {victim} killed by signal 9 (SIGKILL)" in str(caught.value)


def _sleep_forever() -> None:
    time.sleep(3600)


@pytest.fixture
def sleepers():
    procs = [mp.get_context("fork").Process(target=_sleep_forever, daemon=True) for _ in range(2)]
    for p in procs:
        p.start()
    yield procs
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join()


@pytest.mark.timeout(60)
def test_the_watch_names_the_first_process_to_end_and_refuses_calls_after(sleepers):
    watch = WorkerWatch(sleepers)
    try:
        assert watch.first_ended() == []
        with watch.calling():  # every worker runs: a call goes ahead
            pass
        sleepers[1].kill()
        sleepers[1].join()
        assert watch.first_ended() == [sleepers[1]]
        sleepers[0].kill()  # a later end changes nothing: the first is the one to name
        sleepers[0].join()
        assert watch.first_ended() == [sleepers[1]]
        with pytest.raises(PoolBroken):
            with watch.calling():
                pass
    finally:
        watch.close()


@pytest.mark.timeout(60)
def test_the_watch_interrupts_a_call_blocked_on_a_dead_worker(sleepers):
    """A main-thread call blocked on a semaphore the dead process would have released (DALI's task queue waiting for a
    killed sleeper to wake) is interrupted `unblock_after` seconds after the death."""
    watch = WorkerWatch(sleepers, unblock_after=0.2)
    never = mp.get_context("fork").Semaphore(0)
    threading.Timer(0.2, sleepers[0].kill).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            with watch.calling():
                never.acquire()
        assert watch.interrupted
        assert watch.first_ended() == [sleepers[0]]
    finally:
        watch.close()
