"""Exclusive writers: a dataset's named output (a vocabulary folder, a mask and its files) is built by one process
at a time, in a temporary folder, and renamed into place when whole.

Two concurrent `vocab --name v` once both reported success and left a garbled classes.tsv. Here the second builder
of a name meets one line ("being built by another process", or "already exists" once the first has finished), and
a reader sees the old output or the new one, never a mix of two builders' files or a half-written one. The lock is
an flock on a hidden file beside the output (released when the build ends, or when its process dies); the
temporary folder is hidden too (dataset listings skip dot-names) and removed on failure.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tagstream.loader.data.format import fsync_dir

STAGING_DIR = re.compile(r"\.[^/]+\.\d+\.tmp")  # .NAME.PID.tmp: a build in progress, or left by one that died


def in_staging(rel: str) -> bool:
    """Whether a dataset-relative path lies in a staging folder (never pushed, mirrored or read)."""
    return any(STAGING_DIR.fullmatch(part) for part in rel.split("/"))


class Staged:
    """NAME under `parent`, built exclusively. Creating it takes the lock, so a second builder fails fast, before
    its work: ValueError "being built by another process", or (without `replace`) "already exists" when
    parent/`marker` is there (`advice` says what to do). `with staged as tmp:` gives an empty folder to write into; a clean exit renames
    `outputs` (file names inside tmp, in order: the one readers look for last) into `parent`, or, with no
    outputs, the folder itself to parent/NAME (an older one is swapped out and removed); then the lock is
    released. An exception removes the folder and leaves NAME as it was."""

    def __init__(
        self,
        parent: str | Path,
        name: str,
        *,
        what: str,
        marker: str,
        replace: bool = False,
        outputs: Sequence[str] = (),
        advice: str = "choose another name",
    ):
        self.parent, self.name, self.what, self.outputs = Path(parent), name, what, tuple(outputs)
        self.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.parent / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip() or "?"
            self.close()
            raise ValueError(
                f"{self.parent / name}: {what} {name!r} is being built by another process (pid {holder}); "
                "wait for it to finish, or choose another name"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)
        if (self.parent / marker).exists() and not replace:
            self.close()
            raise ValueError(f"{self.parent}: {what} {name!r} already exists; {advice}")
        self.tmp = self.parent / f".{name}.{os.getpid()}.tmp"

    def __enter__(self) -> Path:
        for stale in self.parent.glob(f".{self.name}.*.tmp"):  # left by a builder that died (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if kind is None:
                self._commit()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.close()

    def _commit(self) -> None:
        for entry in self.tmp.iterdir():  # every byte on disk before any rename makes it visible
            if entry.is_file():
                with open(entry, "rb") as f:
                    os.fsync(f.fileno())
        fsync_dir(self.tmp)
        if self.outputs:
            for name in self.outputs:
                os.replace(self.tmp / name, self.parent / name)
        else:
            final = self.parent / self.name
            old = self.parent / f".{self.name}.{os.getpid()}.old"
            if final.exists():
                os.replace(final, old)
            os.replace(self.tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        fsync_dir(self.parent)

    def close(self) -> None:
        """Release the lock (also done when the object is collected, or by the kernel when the process dies)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()
