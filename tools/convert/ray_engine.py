"""`tagstream convert --engine ray`: the parts of tools/convert/parts.py as Ray tasks, merged on the driver.

The driver scans the input once and records the conversion in OUT (every node must see OUT: a shared
filesystem), submits one task per part not yet committed, and merges when all are. Ray retries a task whose
worker process dies (max_retries); the retry resumes the part after its last committed shard, the half-written
shard is discarded, so no record is lost or duplicated. A task that raises (its input is gone, its disk is
full) is not retried: the job waits for the other parts, then fails naming each failed part and its input
range; a rerun of the same command redoes only the parts without a commit record. The merge rewrites the
shards whose tag ids change as Ray tasks as well (one per shard), then writes the manifest on the driver.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from tagstream.loader.data import format as fmt
from tagstream.tools.convert.engine import ConvertSummary, summary
from tagstream.tools.convert.image import ImageOptions
from tagstream.tools.convert.merge import ShardMove, merge, place
from tagstream.tools.convert.parts import PartSpec, convert_part, part_root, plan, read_part, recorded_parts
from tagstream.tools.convert.shards import STATE_DIR

MAX_RETRIES = 3  # a part's task is rerun this many times after its worker process died
PARTS_PER_CPU = 4  # default parts: enough that a slow part does not leave the other CPUs idle at the end


class PartsFailed(RuntimeError):
    """Some parts failed for good; the others are committed and a rerun redoes only the failed ones."""


def require_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError("--engine ray needs Ray: pip install 'tagstream[ray]'") from None
    return ray


def connect(address: str | None):
    """Join the Ray cluster at `address` (None: RAY_ADDRESS, or a local one on this machine); an already
    connected driver (a test's, a notebook's) is used as it is."""
    ray = require_ray()
    if not ray.is_initialized():
        _probe(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as exc:  # no cluster there, or (Ray's token authentication) another token
            raise RuntimeError(
                f"cannot join the Ray cluster at {address or 'RAY_ADDRESS'}: {exc} (is `ray start` running there, and "
                "does this machine hold the cluster's authentication token?)"
            ) from None
    return ray


def _probe(address: str | None, timeout: float = 5.0) -> None:
    """Refuse a HOST:PORT where nothing listens, at once: Ray itself retries such an address for minutes."""
    import socket

    host, sep, port = (address or "").rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # None, "auto", "local" or a ray:// client address: Ray answers those promptly itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RuntimeError(
            f"no Ray cluster answers at {address} ({exc}); start one there with `ray start --head`"
        ) from None


def convert_on_ray(
    src: str | Path,
    out: str | Path,
    *,
    parts: int | None = None,
    address: str | None = None,
    workers: int = 1,
    max_retries: int = MAX_RETRIES,
    format: str = "auto",
    shard_size: int = 10_000,
    image_options: ImageOptions = ImageOptions(),
    progress: bool = False,
    **columns: str,
) -> ConvertSummary:
    """Convert SRC into OUT with one Ray task per part (each using `workers` decoding processes), then merge."""
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be a non-negative integer, got {max_retries!r}")
    t0 = time.perf_counter()
    ray = connect(address)
    if parts is None:
        parts = recorded_parts(out) or max(1, PARTS_PER_CPU * int(ray.cluster_resources().get("CPU", 1)) // workers)
    source, out, wanted = plan(
        src, out, parts, format=format, shard_size=shard_size, image_options=image_options, **columns
    )
    if (out / fmt.MANIFEST).exists():
        return merge(out)  # already whole: says so, changes nothing
    specs = [PartSpec(i, parts) for i in range(parts)]
    todo = [s for s in specs if read_part(part_root(out, s)) is None]
    task = ray.remote(num_cpus=workers, max_retries=max_retries, retry_exceptions=False)(convert_part)
    kwargs = dict(
        format=format,
        shard_size=shard_size,
        workers=workers,
        image_options=image_options,
        wanted=wanted,
        scan_state=source.scan_state(out / STATE_DIR),
        **columns,
    )
    running = {task.remote(str(src), str(out), spec, **kwargs): spec for spec in todo}
    failed = []
    from tagstream.loader import progress_bar

    with progress_bar(total=parts, initial=parts - len(todo), unit="part", desc="convert", disable=not progress) as bar:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            spec = running.pop(ready[0])
            try:
                ray.get(ready[0])
            except Exception as exc:  # a task's exception, or its worker died more than max_retries times
                lo, hi = spec.input_range(wanted["inputs"])
                failed.append(f"part {spec} (inputs {lo}..{hi - 1}): {_cause(exc)}")
            bar.update(1)
    if failed:
        raise PartsFailed(
            f"{len(failed)} of {parts} parts failed (the others are committed; rerun the same command to redo only "
            "these):\n  " + "\n  ".join(failed)
        )
    place_task = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(place)

    def place_all(moves: Sequence[ShardMove]) -> list[dict]:
        return ray.get([place_task.remote(m) for m in moves])

    merged = merge(out, place_all=place_all)
    processed = sum(s.input_range(wanted["inputs"])[1] - s.input_range(wanted["inputs"])[0] for s in todo)
    return summary(
        out,
        merged.manifest,
        already=False,
        resumed=wanted["inputs"] - processed,
        processed=processed,
        seconds=time.perf_counter() - t0,
    )


def _cause(exc: Exception) -> str:
    """The first line of what went wrong inside the task (Ray wraps it in its own exception types)."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"
