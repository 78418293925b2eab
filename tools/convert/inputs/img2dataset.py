"""What img2dataset records about its downloads, read beside each shard it wrote (local or a URL): NNNNN.parquet,
one row per sample of the shard, failed ones included (a failed sample never reaches the tar), and
NNNNN_stats.json, its counts. A failed sample becomes a reject with img2dataset's status and error text, its URL
and key; its status keeps img2dataset's distinction: failed_to_download -> download_failed (404, timeout,
refused), failed_to_resize -> resize_failed (bytes downloaded, but not an image img2dataset could decode or
resize); any other non-success status is download_failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack

from tagstream.loader.data import storage
from tagstream.tools.convert.inputs.base import RAW_LIMIT, Item
from tagstream.tools.convert.inputs.bounds import ITEM_LIMIT, STATS_LIMIT, chunk_limit, oversized_chunks

STATUS_REASONS = {"failed_to_download": "download_failed", "failed_to_resize": "resize_failed"}
ERROR_COLUMN = "error_message"  # img2dataset's explanation of a failed sample
SIDECAR_COLUMNS = ("key", "url", ERROR_COLUMN)  # what a reject keeps of a sidecar row (with the status)
SIDECAR_BATCH = 4096  # sidecar rows read at once
SIDECAR_CHUNK_LIMIT = chunk_limit(ITEM_LIMIT)  # its text columns are read under the default images' bound


def failure_reason(status: str) -> str:
    return STATUS_REASONS.get(status, "download_failed")


def failed(pos: int, line: int, raw: str, where: str, row: dict, status_field: str) -> Item:
    """The reject of a sample img2dataset could not fetch or decode (`row`: its sidecar row or JSON member)."""
    status = row.get(status_field)
    detail = row.get(ERROR_COLUMN) or "no error message"
    url, key = row.get("url"), row.get("key")
    url = url if isinstance(url, str) else None
    key = key if isinstance(key, str) else None
    error = f"img2dataset {status_field} {status!r}: {detail}"
    return Item(pos, line, raw, url or where, (), "", error, failure_reason(str(status)), url=url, key=key)


def sidecars(shard: str) -> tuple[str, str]:
    """'dir/00000.tar' -> ('dir/00000.parquet', 'dir/00000_stats.json')."""
    stem = shard
    for suffix in (".tar.gz", ".tgz", ".tar", ".parquet"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem + ".parquet", stem + "_stats.json"


def stats_successes(path: str) -> tuple[int | None, str | None]:
    """(successes, problem) of an NNNNN_stats.json: (None, None) when there is none."""
    try:
        with storage.open_read(path) as f:
            data = f.read(STATS_LIMIT + 1)
    except FileNotFoundError:
        return None, None
    if len(data) > STATS_LIMIT:
        return None, f"{storage.redact(path)} is over {STATS_LIMIT} bytes: not img2dataset's stats"
    try:
        stats = json.loads(data)
    except ValueError as exc:
        return None, f"{storage.redact(path)} is not JSON: {exc}"
    successes = stats.get("successes") if isinstance(stats, dict) else None
    if not isinstance(successes, int) or isinstance(successes, bool) or successes < 0:
        return None, f"{storage.redact(path)} has no 'successes' count"
    return successes, None


def failed_rows(path: str, status_field: str) -> Iterator[tuple[int, dict]]:
    """(1-based row, row) of each sidecar row whose status is not "success", read SIDECAR_BATCH rows at a time;
    nothing when there is no sidecar or it has no status column. pyarrow's errors are the caller's."""
    import pyarrow.parquet as pq

    with ExitStack() as stack:
        try:
            pf = pq.ParquetFile(stack.enter_context(storage.open_read(path)))
        except (
            FileNotFoundError
        ):  # no sidecar: a local file's absence shows at open, a remote object's at its first read
            return
        names = pf.schema_arrow.names
        if status_field not in names:
            return
        columns = [c for c in (status_field, *SIDECAR_COLUMNS) if c in names]
        row = 0
        for g in range(pf.metadata.num_row_groups):
            over = oversized_chunks(pf.metadata.row_group(g), set(columns), SIDECAR_CHUNK_LIMIT)
            if over is not None:
                raise ValueError(f"row group {g}: {over}")
            for batch in pf.iter_batches(batch_size=SIDECAR_BATCH, row_groups=[g], columns=columns):
                values = batch.to_pydict()
                for r, status in enumerate(values[status_field]):
                    row += 1
                    if status != "success":
                        yield row, {c: values[c][r] for c in columns}


def raw_row(row: dict) -> str:
    return json.dumps(row, default=str, ensure_ascii=False)[:RAW_LIMIT]
