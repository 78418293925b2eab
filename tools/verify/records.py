"""The record pass of `tagstream verify`: walk one shard's LMDB records in a child process, so damage that
makes LMDB touch memory past the end of the file (SIGBUS) or trip over its own pages becomes a reported
problem, never the death of `verify`.

Fast: every key in order, every record parsed, its tags against the index and the tag table, its image
a JPEG whose frame header (read from its markers, not decoded) gives the index's width and height, and whose
bytes give the index's digest (where the index has digests). Deep (`--deep`): also every image checked strictly (header within format.MAX_PIXELS,
its size equal to the index's width and height, every scan decodable without a corrupt-data warning:
loader/pipeline/turbo.py check; Pillow's full decode where the extension is not built).
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from pathlib import Path

import numpy as np

from tagstream.loader.data import format as fmt

MAX_PROBLEMS = 5  # per shard: a damaged shard is reported by its first few faults, not by every record


def image_problem(image: bytes) -> tuple[tuple[int, int] | None, str | None]:
    """((width, height), None) of a sound JPEG, or (None, what is wrong with it)."""
    from tagstream.loader.pipeline import turbo

    if turbo.available():
        try:
            return turbo.check(image), None
        except ValueError as exc:
            return None, str(exc)
    try:
        with fmt.open_image(image) as img:
            if img.format != "JPEG":
                return None, f"image is {img.format}, not a JPEG"
            img.load()
            return img.size, None
    except Exception as exc:  # Pillow raises many unrelated types on damaged data
        return None, f"{type(exc).__name__}: {exc}"


def walk_records(
    root: Path, name: str, images: int, arrays: dict[str, np.ndarray], num_tags: int | None, deep: bool
) -> list[str]:
    """Open the (checksum-verified) shard and check every record against the index; in this process."""
    try:
        env = fmt.open_env(fmt.shard_path(root, name))
    except Exception as exc:  # lmdb.Error subclasses: invalid file, version mismatch, ...
        return [f"LMDB cannot open the shard ({type(exc).__name__}: {exc})"]
    problems: list[str] = []
    off, ids = arrays.get("tag_offsets"), arrays.get("tag_ids")
    csr_ok = off is not None and ids is not None and len(off) == images + 1
    sizes = arrays.get("width"), arrays.get("height")
    sizes_ok = all(a is not None and len(a) == images for a in sizes)
    digests = arrays.get("digest")  # optional: absent in datasets converted before it (length checked by the index)
    try:
        with env.begin() as txn:
            entries = txn.stat()["entries"]
            if entries != images:
                problems.append(f"count mismatch: the shard holds {entries} records, manifest says {images}")
            for expected, (key, value) in enumerate(txn.cursor()):
                what = _record_problem(expected, key, value, images, num_tags, ids, off, csr_ok)
                image = fmt.unpack_record(value)["image"] if what is None else b""
                if what is None and sizes_ok and expected < images:  # the header's size, from its markers
                    what = _frame_problem(image, int(sizes[0][expected]), int(sizes[1][expected]))
                if what is None and digests is not None and expected < images:
                    what = _digest_problem(image, int(digests[expected]))
                if what is None and deep:
                    size, what = image_problem(image)
                    if (
                        what is None
                        and sizes_ok
                        and expected < images
                        and size != (int(sizes[0][expected]), int(sizes[1][expected]))
                    ):
                        what = f"image is {size[0]} x {size[1]}, the index says {int(sizes[0][expected])} x {int(sizes[1][expected])}"
                if what is not None:
                    problems.append(f"record {expected}: {what}")
                    if len(problems) >= MAX_PROBLEMS or what.startswith("key "):
                        break
    except Exception as exc:  # lmdb.Error subclasses on damaged pages: PageNotFoundError, CorruptedError, ...
        problems.append(f"LMDB structure is damaged ({type(exc).__name__}: {exc})")
    finally:
        env.close()
    return problems


def _record_problem(
    expected: int,
    key: bytes,
    value: bytes,
    images: int,
    num_tags: int | None,
    ids: np.ndarray | None,
    off: np.ndarray | None,
    csr_ok: bool,
) -> str | None:
    if len(key) != fmt.KEY_BYTES or fmt.decode_key(key) != expected:
        return f"key {key.hex()} is not the local index {expected}"
    try:
        rec = fmt.unpack_record(value)
    except fmt.FormatError as exc:
        return str(exc)
    tags = rec["tags"]
    if not all(isinstance(t, int) for t in tags) or (
        num_tags is not None and any(t < 0 or t >= num_tags for t in tags)
    ):
        return f"tag ids {tags} out of range [0, {num_tags})"
    if not rec["image"].startswith(b"\xff\xd8"):
        return "image bytes are not a JPEG"
    if csr_ok and expected < images and list(ids[off[expected] : off[expected + 1]]) != tags:
        return f"tags {tags} differ from the index"
    return None


def _frame_problem(image: bytes, width: int, height: int) -> str | None:
    from tagstream.loader.data import records

    try:
        w, h = records.frame_size(image)
    except ValueError as exc:
        return str(exc)
    return None if (w, h) == (width, height) else f"JPEG header says {w} x {h}, the index says {width} x {height}"


def _digest_problem(image: bytes, stored: int) -> str | None:
    digest = fmt.image_digest(image)
    return None if digest == stored else f"index digest {stored:016x} is not the image's ({digest:016x})"


def _child(conn, *args) -> None:
    conn.send(walk_records(*args))
    conn.close()


def check_records(
    root: Path, name: str, images: int, arrays: dict[str, np.ndarray], num_tags: int | None, deep: bool
) -> list[str]:
    """walk_records in a forked child: a signal there is a problem named here, not the end of `verify`."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, root, name, images, arrays, num_tags, deep), daemon=True)
    proc.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:  # the child died before it could answer
        result = None
    proc.join()
    parent.close()
    if result is not None:
        return result
    code = proc.exitcode or 0
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    return [f"reading the records killed the reader ({how}): the LMDB structure is damaged"]
