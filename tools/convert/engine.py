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
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tagstream.loader.data import format as fmt
from tagstream.loader.data import read_manifest, storage, write_manifest, write_tags
from tagstream.tools.convert.image import Accepted, ImageOptions, ItemResult
from tagstream.tools.convert.inputs import Source
from tagstream.tools.convert.inputs.bounds import ITEM_LIMIT
from tagstream.tools.convert.outdir import ConvertRefused, WriteFailed, check_state, locked, writing  # noqa: F401 - ConvertRefused, WriteFailed, locked re-exported
from tagstream.tools.convert.pool import results
from tagstream.tools.convert.shards import (
    STATE_DIR,
    ConvertShard,
    remove_after,
    shard_intact,
    slim,
    state_path,
    state_problem,
)


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
    redone: tuple[str, ...] = ()  # shards (or tables) of a finished dataset found missing or cut short, redone
    untagged: int = 0  # images stored without a tag
    fields: tuple[str, ...] = ()  # the fields (JSON keys, columns) the inputs this run read held
    tag_option: str = ""  # the option naming where the tags are, for this kind of input


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


def _reject_record(res: ItemResult) -> dict:
    record = {
        "line": res.item.line,
        "input": res.item.raw,
        "image": res.item.image,
        "reason": res.outcome.reason,
        "detail": res.outcome.detail,
    }
    if res.item.url is not None:  # a downloader's record of the sample (img2dataset)
        record["url"] = res.item.url
    if res.item.key is not None:
        record["key"] = res.item.key
    return record


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
    `source_options` are the input kind's options (inputs.OPTION_NAMES: image_column=..., tags_field=..., images=...)."""
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    t0 = time.perf_counter()
    source, out = open_source(src, out, format=format, item_limit=image_options.max_file_bytes, **source_options)
    wanted = scan_source(source, shard_size=shard_size, image_options=image_options)
    with locked(out):
        check_state(out, wanted)
        redone: tuple[str, ...] = ()
        if (out / fmt.MANIFEST).exists():
            manifest = read_manifest(out)
            redone = tuple(s["name"] for s in manifest["shards"] if not shard_intact(out, s))
            redone += tuple(name for name in (fmt.TAGS, fmt.REJECTS) if not (out / name).is_file())
            if not redone:
                return summary(
                    out,
                    manifest,
                    source=source,
                    already=True,
                    resumed=wanted["inputs"],
                    processed=0,
                    seconds=time.perf_counter() - t0,
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
        if not committed:  # every input rejected: the rejects are written for reading, no dataset
            with writing(out, "the rejects"):
                reasons = write_rejects(out, committed, tail)
            raise ConvertRefused(
                f"every one of the {wanted['inputs']} inputs of {source.path} was rejected "
                f"({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}): no dataset written; "
                f"why each was is in {out / fmt.REJECTS}"
            )
        with writing(out, "the dataset's tables and manifest"):
            manifest = finish(out, committed, tail, wanted)
    return summary(
        out,
        manifest,
        source=source,
        already=False,
        resumed=start,
        processed=wanted["inputs"] - start,
        seconds=time.perf_counter() - t0,
        redone=redone,
    )


def open_source(
    src: str | Path, out: str | Path, *, format: str = "auto", item_limit: int = ITEM_LIMIT, **columns: str
) -> tuple[Source, Path]:
    """The Source of SRC and the resolved OUT, refused when OUT cannot hold a conversion; `item_limit`, the
    conversion's --max-file-bytes, bounds each image the source reads before it is read."""
    source = Source(src, format, item_limit=item_limit, **columns)
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
    if inputs == 0:
        raise ConvertRefused(
            f"{storage.redact(str(source.path))} yields no input ({source.format}: no row, line, sample or image "
            "file in it): nothing to convert, no dataset written"
        )
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
    from tagstream.loader import progress_bar

    tag_ids = {tag: i for i, tag in enumerate(t for s in committed for t in s["new_tags"])}
    seen = source.seen_raw  # what the first inputs held, for naming their fields when tags are missing
    writer = ConvertShard(out, len(committed), start)
    bar = progress_bar(total=inputs, initial=start, unit="img", desc="convert", disable=not progress, smoothing=0.1)
    try:
        # inputs added since the scan are left to a rerun (which refuses: the fingerprint changed)
        for res in results(itertools.islice(source.items(start), inputs - start), options, workers):
            bar.update(1)
            if len(seen) < source.FIELD_SAMPLES:
                seen.append(res.item.raw)
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
    reasons = write_rejects(out, committed, tail)
    untagged = 0
    for s in committed:
        untagged += int(np.count_nonzero(np.diff(np.load(fmt.index_path(out, s["name"], "tag_offsets"))) == 0))
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
        untagged=untagged,
        options=wanted["options"],
    )


def write_rejects(out: Path, committed: list[dict], tail: list[dict]) -> Counter[str]:
    """rejects.jsonl from the committed shards' state files, one shard at a time, then `tail`; counts by reason."""
    reasons: Counter[str] = Counter()

    def lines() -> Iterator[str]:
        shard_rejects = (json.loads(state_path(out, i).read_text())["rejects"] for i in range(len(committed)))
        for rejects in itertools.chain(shard_rejects, [tail]):
            for r in rejects:
                reasons[r["reason"]] += 1
                yield json.dumps(r, sort_keys=True) + "\n"

    fmt.write_text_atomic(out / fmt.REJECTS, lines())
    return reasons


def summary(
    out: Path,
    manifest: dict,
    *,
    source: Source | None = None,
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
        untagged=int(manifest.get("untagged", 0)),
        fields=source.fields_seen() if source is not None else (),
        tag_option=source.tag_option() if source is not None else "",
    )
