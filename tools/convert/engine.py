"""`tagstream convert`: image collections with hashtags -> a tagstream dataset (LMDB shards + NumPy index).

The dataset is a pure function of the input and the options: inputs are enumerated in a fixed order,
workers only validate and re-encode (results are consumed in input order), tag ids are given in order
of first appearance, and shards fill with accepted images in order, so --workers and interruptions never
change a byte. Trade-off: one process writes all shards, which bounds throughput by the writer once
decoding is spread over enough workers.

State kept in OUT/.convert/: state.json (source, fingerprint, options: a rerun must match it), one
NNNNN.json per committed shard (its input range, new tags, rejects) and a lock held while converting.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tagstream.loader import format as fmt
from tagstream.loader.lifetime import exit_with_parent
from tagstream.loader.writer import write_manifest, write_tags
from tagstream.tools.convert.image import Accepted, ImageOptions, Item, ItemResult, process_batch, process_item
from tagstream.tools.convert.outdir import ConvertRefused, WriteFailed, locked, writing  # noqa: F401 - re-exported
from tagstream.tools.convert.shards import (
    STATE_DIR,
    ConvertShard,
    remove_after,
    shard_intact,
    slim,
    state_path,
    state_problem,
)
from tagstream.tools.convert.sources import Source

BATCH = 16  # items per task sent to a worker
WINDOW = 4  # tasks in flight per worker: bounds memory whatever the input size


@dataclass(frozen=True)
class ConvertSummary:
    out: str
    already_complete: bool  # the dataset was complete before this run: nothing was changed
    resumed_from: int  # inputs already converted by an earlier, interrupted run
    inputs: int
    images: int
    shards: int
    bytes: int
    tags: int
    rejected: dict[str, int]
    reencoded: dict[str, int]
    processed: int  # inputs processed by this run
    seconds: float
    inputs_per_s: float  # inputs processed per second by this run
    manifest: dict = field(repr=False, default_factory=dict)
    redone: tuple[str, ...] = ()  # shards of a finished dataset found missing or cut short, converted again


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


def _committed(out: Path) -> list[dict]:
    """States of the shards committed so far, contiguous from 0, stopping at the first one not intact."""
    states = []
    while (path := state_path(out, len(states))).exists():
        try:
            state = json.loads(path.read_text())
        except (ValueError, RecursionError):  # written atomically, so only damage from outside: redo from this shard
            break
        if state_problem(state, on_disk=True) or not shard_intact(out, state):
            break
        states.append(slim(state))
    return states


def process_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for a conversion's jobs (decoding, a merge's shards): started by a forkserver (no fork:
    LMDB handles and threads), each exiting with its parent."""
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=exit_with_parent, initargs=(os.getpid(),))


def _results(items: Iterable[Item], options: ImageOptions, workers: int) -> Iterator[ItemResult]:
    """Process items in input order; with workers > 1 a bounded window of batches is in flight."""
    if workers == 1:
        for item in items:
            yield process_item(item, options)
        return
    with process_pool(workers) as pool:
        pending: deque = deque()
        it = iter(items)
        while batch := list(itertools.islice(it, BATCH)):
            pending.append((batch, pool.submit(process_batch, batch, options)))
            if len(pending) >= workers * WINDOW:
                yield from _batch_result(*pending.popleft())
        while pending:
            yield from _batch_result(*pending.popleft())


def _batch_result(batch: list[Item], future) -> list[ItemResult]:
    try:
        return future.result()
    except BrokenProcessPool:
        raise RuntimeError(
            f"a worker process died while decoding input lines {batch[0].line}..{batch[-1].line} (a decoder crash?); "
            "rerun the same command to resume, with --workers 1 to find the input that kills it"
        ) from None


def _reject_record(res: ItemResult) -> dict:
    return {
        "line": res.item.line,
        "input": res.item.raw,
        "image": res.item.image,
        "reason": res.outcome.reason,
        "detail": res.outcome.detail,
    }


def convert(
    src: str | Path,
    out: str | Path,
    *,
    format: str = "auto",
    shard_size: int = 10_000,
    workers: int = 1,
    image_options: ImageOptions = ImageOptions(),
    progress: bool = False,
    **source_options: str | bool,
) -> ConvertSummary:
    """Convert SRC into the dataset directory OUT, resuming an interrupted run; see the module docstring.
    `source_options` are sources.SourceOptions fields (image_column=..., tags_field=..., images=...)."""
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    t0 = time.perf_counter()
    source, out = open_source(src, out, format=format, **source_options)
    wanted = scan_source(source, shard_size=shard_size, image_options=image_options)
    with locked(out):
        check_state(out, wanted)
        redone: tuple[str, ...] = ()
        if (out / fmt.MANIFEST).exists():
            manifest = fmt.read_manifest(out)
            redone = tuple(s["name"] for s in manifest["shards"] if not shard_intact(out, s))
            if not redone:
                return summary(
                    out, manifest, already=True, resumed=wanted["inputs"], processed=0, seconds=time.perf_counter() - t0
                )
            # not whole after all (a shard deleted or cut short since): no manifest until it is again;
            # the conversion resumes after the last intact shard (the same input gives the same bytes)
            (out / fmt.MANIFEST).unlink()
        committed, tail, start = convert_range(
            out,
            source,
            0,
            wanted["inputs"],
            shard_size=shard_size,
            workers=workers,
            image_options=image_options,
            progress=progress,
        )
        with writing(out, "the dataset's tables and manifest"):
            manifest = finish(out, committed, tail, wanted)
    return summary(
        out,
        manifest,
        already=False,
        resumed=start,
        processed=wanted["inputs"] - start,
        seconds=time.perf_counter() - t0,
        redone=redone,
    )


def open_source(src: str | Path, out: str | Path, *, format: str = "auto", **columns: str) -> tuple[Source, Path]:
    """The Source of SRC and the resolved OUT, refused when OUT cannot hold a conversion."""
    source = Source(src, format, **columns)
    out = Path(out).resolve()
    if source.format == "imagefolder" and out.is_relative_to(source.path):
        raise ValueError(f"OUT {out} is inside the ImageFolder SRC {source.path}; the dataset would become input")
    if out.exists() and not out.is_dir():
        raise ConvertRefused(f"{out} exists and is not a directory")
    if (
        out.exists()
        and not (out / STATE_DIR / "state.json").exists()
        and any(p.name != STATE_DIR for p in out.iterdir())
    ):
        raise ConvertRefused(f"{out} is not empty and holds no conversion in progress; choose a new or empty OUT")
    return source, out


def scan_source(source: Source, *, shard_size: int, image_options: ImageOptions, **more_options) -> dict:
    """What is being converted (the state a rerun, a part or a merge must match): one pass over the input."""
    options = conversion_options(shard_size=shard_size, image_options=image_options, **more_options)
    inputs, fingerprint = source.scan()
    return {"source": source.describe(), "fingerprint": fingerprint, "inputs": inputs, "options": options}


def conversion_options(*, shard_size: int, image_options: ImageOptions, **more_options) -> dict:
    """The options a conversion records in its state (a rerun must give the same)."""
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    return {"shard_size": shard_size, **asdict(image_options), **more_options}


def convert_range(
    root: Path,
    source: Source,
    lo: int,
    hi: int,
    *,
    shard_size: int,
    workers: int,
    image_options: ImageOptions,
    progress: bool,
) -> tuple[list[dict], list[dict], int]:
    """Convert inputs [lo, hi) into shards under root (locked by the caller), resuming after its committed shards.
    Returns (the shards' states, the rejects after the last shard, the input this run started at)."""
    for sub in (fmt.SHARDS_DIR, fmt.INDEX_DIR):
        (root / sub).mkdir(exist_ok=True)
    committed = _committed(root)
    remove_after(root, len(committed))
    start = committed[-1]["input_stop"] if committed else lo
    tail = _convert_items(root, source, committed, start, hi, shard_size, workers, image_options, progress)
    return committed, tail, start


def _convert_items(
    out: Path,
    source: Source,
    committed: list[dict],
    start: int,
    inputs: int,
    shard_size: int,
    workers: int,
    options: ImageOptions,
    progress: bool,
) -> list[dict]:
    """Convert inputs [start, inputs) into shards appended to `committed`; returns the rejects after the last shard."""
    from tagstream.loader.progress import progress_bar

    tag_ids = {tag: i for i, tag in enumerate(t for s in committed for t in s["new_tags"])}
    writer = ConvertShard(out, len(committed), start)
    bar = progress_bar(total=inputs, initial=start, unit="img", desc="convert", disable=not progress, smoothing=0.1)
    try:
        # inputs added since the scan are left to a rerun (which refuses: the fingerprint changed)
        for res in _results(itertools.islice(source.items(start), inputs - start), options, workers):
            bar.update(1)
            if not isinstance(res.outcome, Accepted):
                writer.rejects.append(_reject_record(res))
                continue
            ids = []
            for tag in res.tags:
                if tag not in tag_ids:
                    tag_ids[tag] = len(tag_ids)
                    writer.new_tags.append(tag)
                ids.append(tag_ids[tag])
            with writing(out, f"shard {writer.name}"):
                writer.add_image(res.outcome, ids, res.item.source)
                if len(writer) == shard_size:
                    committed.append(writer.commit_part(res.item.pos + 1))
                    writer = ConvertShard(out, len(committed), res.item.pos + 1)
        if len(writer):
            with writing(out, f"shard {writer.name}"):
                committed.append(writer.commit_part(inputs))
            return []
        return writer.rejects
    finally:
        bar.close()
        writer.abort()


def finish(out: Path, committed: list[dict], tail: list[dict], wanted: dict) -> dict:
    """tags.tsv, rejects.jsonl, then the manifest — last, so its presence means the dataset is whole.
    Shard i's rejects are read from its state file (OUT/.convert/NNNNN.json) one shard at a time and streamed
    into rejects.jsonl, so memory does not grow with the number of rejects."""
    tags = [t for s in committed for t in s["new_tags"]]
    counts = np.zeros(len(tags), np.int64)
    for s in committed:
        ids = np.load(fmt.index_path(out, s["name"], "tag_ids"))
        counts += np.bincount(ids, minlength=len(tags))[: len(tags)]
    write_tags(out, tags, counts)
    reasons: Counter[str] = Counter()

    def lines() -> Iterator[str]:
        shard_rejects = (json.loads(state_path(out, i).read_text())["rejects"] for i in range(len(committed)))
        for rejects in itertools.chain(shard_rejects, [tail]):
            for r in rejects:
                reasons[r["reason"]] += 1
                yield json.dumps(r, sort_keys=True) + "\n"

    fmt.write_text_atomic(out / fmt.REJECTS, lines())
    reencoded: Counter[str] = Counter()
    for s in committed:
        reencoded.update(s["reencoded"])
    return write_manifest(
        out,
        committed,
        tags=len(tags),
        source={**wanted["source"], "fingerprint": wanted["fingerprint"]},
        inputs=wanted["inputs"],
        rejected=sum(reasons.values()),
        rejects_by_reason=dict(sorted(reasons.items())),
        reencoded=dict(sorted(reencoded.items())),
        options=wanted["options"],
    )


def summary(
    out: Path,
    manifest: dict,
    *,
    already: bool,
    resumed: int,
    processed: int,
    seconds: float,
    redone: tuple[str, ...] = (),
) -> ConvertSummary:
    return ConvertSummary(
        redone=redone,
        out=str(out),
        already_complete=already,
        resumed_from=resumed,
        inputs=manifest["inputs"],
        images=manifest["images"],
        shards=len(manifest["shards"]),
        bytes=manifest["bytes"],
        tags=manifest["tags"],
        rejected=manifest["rejects_by_reason"],
        reencoded=manifest["reencoded"],
        processed=processed,
        seconds=seconds,
        inputs_per_s=processed / seconds if seconds > 0 else 0.0,
        manifest=manifest,
    )
