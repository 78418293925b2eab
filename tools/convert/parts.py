"""Partitioned conversion: the inputs cut into N contiguous parts by input position, each converted on its own
(any machine, any scheduler: Ray tasks, Slurm arrays, Kubernetes jobs) into OUT/parts/IIIII-of-NNNNN/, then
merged into one dataset by tools/convert/merge.py.

A part is a small conversion directory of its own: shards committed one by one as in a one-process conversion
(a killed part resumes after its last committed shard and discards the half-written one), its own tag ids in
order of first appearance inside the part, and last `part.json`, the part's commit point (its input range, the
scan it was converted against, its shards' states and the rejects after its last shard). OUT/.convert/state.json
records the scan and the options, `parts: N` included, so a part of another source, other options or another N
is refused before it writes anything. Trade-off: parts number their tags on their own, so the merge rewrites the
records of every shard whose raw tag ids differ from the global ones (parts 1..N-1, one pass over their bytes).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from tagstream.loader.data import format as fmt
from tagstream.tools.convert.engine import (
    ConvertRefused,
    check_state,
    conversion_options,
    convert_range,
    locked,
    open_source,
    scan_source,
)
from tagstream.tools.convert.image import ImageOptions
from tagstream.tools.convert.part_checks import check_record, part_problem
from tagstream.tools.convert.shards import STATE_DIR

PARTS_DIR = "parts"
PART_DONE = "part.json"
SCAN_STATE = "scan.json"  # in OUT/.convert/: the planning scan's Source.scan_state(), reused by every part
MAX_PARTS = 99_999  # the width of a part's directory name
_PART_NAME = re.compile(r"(\d{5})-of-(\d{5})")


@dataclass(frozen=True)
class PartSpec:
    """Part `index` of `count` (0-based): inputs [inputs * index // count, inputs * (index + 1) // count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        for name in ("index", "count"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"part {name} must be an integer, got {value!r}")
        if not 1 <= self.count <= MAX_PARTS:
            raise ValueError(f"the number of parts N must be in [1, {MAX_PARTS}], got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"part index I must be in [0, {self.count - 1}] for N={self.count}, got {self.index}")

    @classmethod
    def parse(cls, text: str) -> PartSpec:
        """'I/N' -> PartSpec(I, N); ValueError names the text and the expected form."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise ValueError(f"--part must look like I/N (part I of N, 0 <= I < N), got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def name(self) -> str:
        return f"{self.index:05d}-of-{self.count:05d}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def input_range(self, inputs: int) -> tuple[int, int]:
        return inputs * self.index // self.count, inputs * (self.index + 1) // self.count


@dataclass(frozen=True)
class PartSummary:
    part: str  # "I/N"
    input_start: int
    input_stop: int
    already_complete: bool  # committed by an earlier run: nothing was changed
    images: int
    shards: int
    rejected: int
    processed: int  # inputs processed by this run
    seconds: float


def part_root(out: Path, spec: PartSpec) -> Path:
    return Path(out) / PARTS_DIR / spec.name


def parse_part_name(name: str) -> PartSpec | None:
    """A directory name under OUT/parts -> its PartSpec; None when it is not a part's name."""
    match = _PART_NAME.fullmatch(name)
    if not match:
        return None
    try:
        return PartSpec(int(match.group(1)), int(match.group(2)))
    except ValueError:
        return None


def read_part(root: Path) -> object:
    """A part's commit record, its structure checked (part_checks.part_problem; check_record adds its range and
    accounting), or None while it is not committed."""
    try:
        record = json.loads((root / PART_DONE).read_text())
    except FileNotFoundError:
        return None
    except (ValueError, RecursionError):
        record, problem = None, "unreadable"
    else:
        problem = part_problem(record)
    if problem:
        raise ConvertRefused(
            f"{root / PART_DONE} is damaged ({problem}); delete {root} and convert that part again"
        ) from None
    return record


@dataclass(frozen=True)
class PartsPlan:
    out: str
    inputs: int
    parts: int
    committed: int  # parts committed so far


def plan(
    src: str | Path,
    out: str | Path,
    parts: int,
    *,
    format: str = "auto",
    shard_size: int = 10_000,
    image_options: ImageOptions = ImageOptions(),
    **columns: str,
):
    """Scan SRC and record the partitioned conversion in OUT/.convert/ (state.json, or check it against what is
    recorded there: a changed input is refused here; and scan.json, the source's scan state): returns
    (source, resolved OUT, the state every part and the merge must match)."""
    PartSpec(0, parts)  # validates N
    source, out = open_source(src, out, format=format, item_limit=image_options.max_file_bytes, **columns)
    wanted = scan_source(source, shard_size=shard_size, image_options=image_options, parts=parts)
    with locked(out, shared=True):
        check_state(out, wanted)
        fmt.write_json_atomic(
            out / STATE_DIR / SCAN_STATE,
            {"fingerprint": wanted["fingerprint"], "state": source.scan_state(out / STATE_DIR)},
        )
    return source, out, wanted


def recorded_plan(
    src: str | Path,
    out: str | Path,
    parts: int,
    *,
    format: str = "auto",
    shard_size: int = 10_000,
    image_options: ImageOptions = ImageOptions(),
    **columns: str,
):
    """The plan an earlier `plan` recorded in OUT for this source and these options, without scanning SRC again
    (None when OUT holds none), so each of N parts does not pay a scan of the whole input. Trade-off: the input
    must not change between the planning scan and the merge; a new `plan` (or a Ray driver) scans and refuses
    a changed input."""
    source, out = open_source(src, out, format=format, item_limit=image_options.max_file_bytes, **columns)
    try:
        have = json.loads((out / STATE_DIR / "state.json").read_text())
        scan = json.loads((out / STATE_DIR / SCAN_STATE).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(have, dict) or not isinstance(scan, dict) or scan.get("fingerprint") != have.get("fingerprint"):
        return None
    options = conversion_options(shard_size=shard_size, image_options=image_options, parts=parts)
    wanted = {
        "source": source.describe(),
        "fingerprint": have["fingerprint"],
        "inputs": have["inputs"],
        "options": options,
    }
    check_state(out, wanted)  # another source or other options: refused, as after a scan
    source.load_scan_state(scan["state"], out / STATE_DIR)
    return source, out, wanted


def plan_parts(src: str | Path, out: str | Path, parts: int, **options) -> PartsPlan:
    """`tagstream convert SRC OUT --parts N` without an engine: scan once and record the plan, so the N
    `--part I/N` jobs started next reuse it."""
    _, out, wanted = plan(src, out, parts, **options)
    done = sum(read_part(part_root(out, PartSpec(i, parts))) is not None for i in range(parts))
    return PartsPlan(out=str(out), inputs=wanted["inputs"], parts=parts, committed=done)


def recorded_parts(out: str | Path) -> int | None:
    """N of the partitioned conversion recorded in OUT, if any (a rerun without --parts reuses it)."""
    try:
        state = json.loads((Path(out) / STATE_DIR / "state.json").read_text())
    except (OSError, ValueError):
        return None
    parts = state.get("options", {}).get("parts") if isinstance(state, dict) else None
    return parts if isinstance(parts, int) else None


def convert_part(
    src: str | Path,
    out: str | Path,
    part: PartSpec,
    *,
    format: str = "auto",
    shard_size: int = 10_000,
    workers: int = 1,
    image_options: ImageOptions = ImageOptions(),
    progress: bool = False,
    wanted: dict | None = None,
    scan_state: dict | None = None,
    **columns: str,
) -> PartSummary:
    """Convert part I of N of SRC into OUT/parts/IIIII-of-NNNNN/ (resuming it), then commit it with part.json.

    `wanted` and `scan_state` are the driver's scan (from `plan`, and its Source.scan_state()), so a cluster's
    tasks do not each read the whole input again; without them the part reuses the plan recorded in OUT
    (`recorded_plan`), or scans SRC itself and records it when OUT has none."""
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    t0 = time.perf_counter()
    if wanted is None:
        how = dict(format=format, shard_size=shard_size, image_options=image_options, **columns)
        source, out, wanted = recorded_plan(src, out, part.count, **how) or plan(src, out, part.count, **how)
    else:
        source, out = open_source(src, out, format=format, item_limit=image_options.max_file_bytes, **columns)
        source.load_scan_state(scan_state, out / STATE_DIR)
    if wanted["options"].get("parts") != part.count:
        raise ValueError(f"part {part} does not belong to a conversion in {wanted['options'].get('parts')} parts")
    lo, hi = part.input_range(wanted["inputs"])
    root = part_root(out, part)
    with locked(out, shared=True):
        check_state(out, wanted)
        if (out / fmt.MANIFEST).exists():
            raise ConvertRefused(f"{out} is already merged into a dataset; part {part} has nothing left to do")
        root.mkdir(parents=True, exist_ok=True)
        with locked(root):
            check_state(root, wanted)
            done = read_part(root)
            if done is not None:
                check_record(root, done, lo, hi)
                return _part_summary(part, done, already=True, processed=0, seconds=time.perf_counter() - t0)
            committed, tail, start = convert_range(
                root,
                source,
                lo,
                hi,
                shard_size=shard_size,
                workers=workers,
                image_options=image_options,
                progress=progress,
            )
            record = {
                **wanted,
                "part": [part.index, part.count],
                "input_start": lo,
                "input_stop": hi,
                "shards": committed,
                "tail": tail,
            }
            fmt.write_json_atomic(root / PART_DONE, record)
    return _part_summary(part, record, already=False, processed=hi - start, seconds=time.perf_counter() - t0)


def _part_summary(part: PartSpec, record: dict, *, already: bool, processed: int, seconds: float) -> PartSummary:
    shards = record["shards"]
    rejected = sum(s["rejected"] for s in shards) + len(record["tail"])
    return PartSummary(
        part=str(part),
        input_start=record["input_start"],
        input_stop=record["input_stop"],
        already_complete=already,
        images=sum(s["images"] for s in shards),
        shards=len(shards),
        rejected=rejected,
        processed=processed,
        seconds=seconds,
    )
