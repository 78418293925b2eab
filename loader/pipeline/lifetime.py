"""Worker process lifetimes. exit_with_parent: the one way a worker process (a DALI source worker, a conversion worker)
ends when the process that started it is gone, so a kill -9 of a trainer or a converter never leaves orphans holding
shared memory or blocked on a queue forever. WorkerWatch and WorkerDied: the other direction, a worker that dies
under a running loader is named (pid, exit signal) instead of surfacing as the pool's anonymous error."""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator


def exit_with_parent(pid: int | None = None) -> None:
    """Exit this process (os._exit(1)) as soon as process `pid` (default: the parent) has terminated.

    A daemon thread waits on the process's pidfd (Linux >= 5.3), or polls it once a second elsewhere.
    Called once per worker process, at its start."""
    pid = os.getppid() if pid is None else pid
    if pid == 1 or not _alive(pid):  # the parent died before we were watching it
        os._exit(1)

    def wait_and_exit() -> None:
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # no pidfd: poll
            while _alive(pid):
                time.sleep(1.0)
            os._exit(1)
        select.select([fd], [], [])  # readable once the process has terminated
        os._exit(1)

    threading.Thread(target=wait_and_exit, daemon=True, name="exit-with-parent").start()


def enter_worker(seen_pid: int) -> int:
    """At a DALI source's call: the first in a new worker process (this pid is not `seen_pid`, the one the source last
    saw; the process that built it never arms anything) exits with its parent and leaves Ctrl-C to the trainer (it
    reaches the whole process group; the trainer stops and closes its workers, and a worker that took the signal too
    would only print a KeyboardInterrupt traceback from DALI's queue). Returns this process's pid, to keep."""
    pid = os.getpid()
    if pid != seen_pid:
        exit_with_parent()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WorkerDied(RuntimeError):
    """A worker process of the loader ended while the loader ran; the message names it (pid, exit signal or status)."""


class PoolBroken(RuntimeError):
    """A pipeline call refused because a worker has already ended (the caller names the worker)."""


class WorkerWatch:
    """Which of a pool's worker processes ended first, so a broken pool is reported by the worker that broke it
    (DALI's pool stops every worker once one exits, so afterwards all of them have ended), and no caller waits on the
    dead pool forever. A daemon thread waits on the processes' sentinels (readable from the moment a process exits)
    and records the first to end.

    DALI's pool wakes a caller waiting for results when a worker exits, but not one blocked handing a task to the
    queue a killed worker slept on (a condition variable waiting for the dead process to wake) or on a lock it held:
    so pipeline calls run inside `calling()`, a call made after a death is refused (PoolBroken), and a call in the
    main thread still blocked `unblock_after` seconds after the death is interrupted with SIGINT, where Python's own
    handler is installed (`interrupted` is then True: the caller turns the KeyboardInterrupt into the worker's
    error). A loader iterated outside the main thread cannot be interrupted this way."""

    def __init__(self, processes: list, *, unblock_after: float = 2.0) -> None:
        import multiprocessing.connection

        self.processes = list(processes)
        self.interrupted = False
        self._first: list = []
        self._recorded = threading.Event()
        self._lock = threading.Lock()
        self._call: tuple[int, int] | None = None  # (thread, number) of the pipeline call in progress
        self._calls = 0
        self._stop_r, self._stop_w = os.pipe()
        sentinels = {p.sentinel: p for p in self.processes}
        self._sentinels = list(sentinels)

        def watch() -> None:
            wait = multiprocessing.connection.wait
            ready = wait([*sentinels, self._stop_r])
            with self._lock:
                self._first = [sentinels[s] for s in ready if s in sentinels]
                call = self._call
            self._recorded.set()
            if not self._first or call is None or call[0] != threading.main_thread().ident:
                return
            if wait([self._stop_r], unblock_after):  # closed: the call came back with the pool's error
                return
            with self._lock:
                if self._call == call and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                    self.interrupted = True
                    signal.pthread_kill(call[0], signal.SIGINT)

        self._thread = threading.Thread(target=watch, daemon=True, name="worker-watch")
        self._thread.start()

    @contextmanager
    def calling(self) -> Iterator[None]:
        """Mark a pipeline call in progress in this thread; refused (PoolBroken) once a worker has ended."""
        import multiprocessing.connection

        ended = multiprocessing.connection.wait(self._sentinels, 0)  # a poll(2): a few µs a batch
        with self._lock:
            if self._first or ended:
                raise PoolBroken("a loader worker process has ended")
            self._calls += 1
            self._call = (threading.get_ident(), self._calls)
        try:
            yield
        finally:
            with self._lock:
                self._call = None

    def first_ended(self, grace: float = 5.0) -> list:
        """The process(es) that ended first, or [] while every worker runs (checked now, without waiting; `grace`
        bounds the wait for the watching thread to have recorded which one came first)."""
        import multiprocessing.connection

        if not multiprocessing.connection.wait(self._sentinels, 0):
            return []
        self._recorded.wait(grace)
        return self._first

    def close(self) -> None:
        if self._stop_w < 0:
            return
        os.write(self._stop_w, b"x")
        self._thread.join()
        os.close(self._stop_r)
        os.close(self._stop_w)
        self._stop_w = -1


def exit_description(code: int | None) -> str:
    """A process's exit code as words: 'killed by signal 9 (SIGKILL)', 'exited with status 1'."""
    if code is None:
        return "ended (exit status unknown)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-code} ({name})"
    return f"exited with status {code}"
