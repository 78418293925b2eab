"""A conversion's hold on OUT: its lock (exclusive for a writer, shared by parts beside each other) and the one-line
error a failed write becomes (full disk, quota, I/O error)."""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path

from tagstream.tools.convert.shards import STATE_DIR


class ConvertRefused(Exception):
    """OUT cannot take this conversion (another source, other options, not a conversion directory)."""


class WriteFailed(RuntimeError):
    """Writing OUT failed (a full disk, a quota, an I/O error): what was committed is kept, a rerun resumes."""


@contextmanager
def writing(out: Path, what: str):
    """Turn a failed write into one line naming OUT, what was being written and the free space left: LMDB
    reports a full disk as an I/O error at commit, Python as OSError ENOSPC/EDQUOT/EFBIG."""
    import errno

    import lmdb

    try:
        yield
    except (OSError, lmdb.Error) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
            raise  # not a failed write (an input that went away, ...): the caller's own error
        import shutil

        try:
            free = f"{shutil.disk_usage(out).free / 2**20:.1f} MiB free there now"
        except OSError:
            free = "free space unknown"
        raise WriteFailed(
            f"{out}: writing {what} failed ({type(exc).__name__}: {exc}; {free}); free space and rerun the same "
            "command: committed shards are kept and the conversion resumes where it stopped"
        ) from None


@contextmanager
def locked(out: Path, *, shared: bool = False):
    """Hold OUT's conversion lock: exclusive for a writer of OUT itself, shared for the parts converting beside
    each other under OUT/parts/ (a merge takes it exclusively, so it never runs beside a part)."""
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    with open(out / STATE_DIR / "lock", "a") as f:
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConvertRefused(
                f"{out}: another `tagstream convert` is writing this directory (or a `tagstream merge`)"
            ) from None
        yield
