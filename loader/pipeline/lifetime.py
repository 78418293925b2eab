"""exit_with_parent: the one way a worker process (a DALI source worker, a conversion worker) ends when the
process that started it is gone, so a kill -9 of a trainer or a converter never leaves orphans holding shared
memory or blocked on a queue forever."""

from __future__ import annotations

import os
import select
import threading
import time


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
