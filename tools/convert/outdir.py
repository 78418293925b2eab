"""A conversion's hold on OUT: what it converts (state.json, checked against a rerun's source and options), its lock (exclusive for a writer, shared by parts beside each other) and the one-line
error a failed write becomes (full disk, quota, I/O error)."""

from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path

from tagstream.loader.data import format as fmt
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


def read_state(path: Path) -> dict:
    """OUT/.convert/state.json, checked by type (what check_state, parts and merge read), or ConvertRefused."""
    try:
        have = json.loads(path.read_text())
    except (ValueError, RecursionError):
        have = None
    inputs = have.get("inputs") if isinstance(have, dict) else None
    if (
        not isinstance(have, dict)
        or not isinstance(have.get("source"), dict)
        or not isinstance(have.get("options"), dict)
        or not isinstance(have.get("fingerprint"), str)
        or not (isinstance(inputs, int) and not isinstance(inputs, bool) and 0 <= inputs < 1 << 63)
    ):
        raise ConvertRefused(f"{path} is unreadable (not written by this tool?); use a new OUT")
    return have


def check_state(out: Path, wanted: dict) -> None:
    """Record what is being converted, or refuse when OUT holds something else."""
    path = out / STATE_DIR / "state.json"
    if not path.exists():
        fmt.write_json_atomic(path, wanted)
        return
    have = read_state(path)
    if have["source"] != wanted["source"]:
        raise ConvertRefused(
            f"{out} holds a conversion of {have['source'].get('path')!r} "
            f"({have['source'].get('format')}), not of {wanted['source']['path']!r}; use another OUT"
        )
    if ":" not in str(have.get("fingerprint")):
        raise ConvertRefused(
            f"{out} was converted by an earlier tagstream, whose source fingerprint did not cover the images' sizes "
            "and times, so whether the source changed since cannot be told; a complete dataset there (manifest.json "
            "present) is usable as it is, and to convert again use another OUT"
        )
    if have.get("fingerprint") != wanted["fingerprint"] or have.get("inputs") != wanted["inputs"]:
        raise ConvertRefused(
            f"{out}: the source {wanted['source']['path']} changed since this conversion started "
            f"({have.get('inputs')} inputs then, {wanted['inputs']} now, or other content); use another OUT"
        )
    keys = {**have["options"], **wanted["options"]}  # both ways: a partitioned OUT's `parts` is not in a plain run's
    diff = {
        k: (have["options"].get(k), wanted["options"].get(k))
        for k in keys
        if have["options"].get(k) != wanted["options"].get(k)
    }
    if "parts" in diff and diff["parts"][1] is None:  # a plain run into an OUT planned in parts
        raise ConvertRefused(
            f"{out} holds a conversion planned in {diff['parts'][0]} parts: run each part (`tagstream convert SRC OUT "
            f"--part I/{diff['parts'][0]}`, or again with --parts {diff['parts'][0]}), then `tagstream merge OUT`; or use another OUT"
        )
    if diff:
        said = ", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in sorted(diff.items()))
        raise ConvertRefused(f"{out} was started with other options ({said}); rerun with those or use another OUT")
