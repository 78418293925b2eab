"""What `tagstream merge` checks before it moves or rewrites anything of a part, and the check it runs before it
deletes the parts.

A part's commit record (part.json) is data read back from disk: its structure is checked field by field, its input
range against the scan recorded in OUT, and its accounting against itself (every input of the range is an image
or a reject, shard by shard, contiguously), its shards' counts and checksums against their state files in the part.
A part's shard goes through the loader's checked path (size and LMDB meta page before LMDB maps it: a truncated
file would kill the merge with SIGBUS) and its content through its recorded sha256 before it is renamed or
rewritten. The parts are deleted only after the merged dataset passes `tagstream verify`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tagstream.loader.data import format as fmt
from tagstream.tools.convert.engine import ConvertRefused
from tagstream.tools.convert.shards import state_path, state_problem


def redo_hint(part_dir: Path) -> str:
    index, _, count = part_dir.name.partition("-of-")
    return f"delete {part_dir} and convert that part again (--part {int(index)}/{int(count)})"


def part_problem(record: object) -> str:
    """What is wrong with the structure of a part's commit record, or "": its keys by type and range, each shard's
    entry as a shard state (shards.state_problem)."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got a JSON {type(record).__name__}"
    part = record.get("part")
    if not (
        isinstance(part, list) and len(part) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in part)
    ):
        return "'part' must be [index, count]"
    if not isinstance(record.get("shards"), list) or not isinstance(record.get("tail"), list):
        return "'shards' and 'tail' must be lists"
    for key in ("input_start", "input_stop"):
        if not isinstance(record.get(key), int) or isinstance(record.get(key), bool) or record[key] < 0:
            return f"{key!r} must be a whole number >= 0"
    return next((f"shard entry {k}: {p}" for k, p in enumerate(map(state_problem, record["shards"])) if p), "")


def check_record(part_dir: Path, record: object, lo: int, hi: int) -> dict:
    """A part's commit record, checked: its structure (part_problem), its input range [lo, hi) from OUT's scan, and its
    accounting (each shard's input span = its images + its rejects, spans contiguous from lo, the rejects after
    the last shard reaching hi). ConvertRefused naming part.json and the fault otherwise."""
    where = part_dir / "part.json"

    def refuse(what: str) -> ConvertRefused:
        return ConvertRefused(f"{where}: {what}; {redo_hint(part_dir)}")

    problem = part_problem(record)
    if problem:
        raise refuse(problem)
    shards, tail = record["shards"], record["tail"]
    if (record.get("input_start"), record.get("input_stop")) != (lo, hi):
        raise refuse(
            f"it covers inputs {record.get('input_start')!r}..{record.get('input_stop')!r}, but this part of the "
            f"scan recorded in OUT is inputs {lo}..{hi}"
        )
    at = lo
    for s in shards:
        if s["input_start"] != at or s["input_stop"] - s["input_start"] != s["images"] + s["rejected"]:
            raise refuse(
                f"shard {s['name']} spans inputs {s['input_start']}..{s['input_stop']} with {s['images']} images and "
                f"{s['rejected']} rejects, expected to start at input {at} and to account for every input of its span "
                "(inputs missing: the record was edited or damaged)"
            )
        at = s["input_stop"]
    if at + len(tail) != hi:
        raise refuse(
            f"its shards and rejects account for inputs {lo}..{at + len(tail)}, not {lo}..{hi} (inputs missing)"
        )
    return record


def check_shard_states(part_dir: Path, record: dict) -> None:
    """Each shard of part.json against the shard's own state file in the part (images, bytes, sha256, rejects):
    a record edited to match leaves the state files disagreeing."""
    for s in record["shards"]:
        path = state_path(part_dir, int(s["name"]) if s["name"].isdigit() else -1)
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):
            raise ConvertRefused(
                f"{path}: the state of shard {s['name']} is missing or unreadable; {redo_hint(part_dir)}"
            )
        same = isinstance(state, dict) and all(state.get(k) == s[k] for k in ("images", "bytes", "sha256"))
        if not same or not isinstance(state.get("rejects"), list) or len(state["rejects"]) != s["rejected"]:
            raise ConvertRefused(
                f"{part_dir / 'part.json'}: shard {s['name']} disagrees with its state file {path.name} "
                f"(images, bytes, sha256 or rejects); {redo_hint(part_dir)}"
            )


def check_shard_files(part_dir: Path, entry: dict) -> None:
    """A part's shard before anything maps or moves it: data.mdb of the recorded size whose LMDB meta page fits
    the file (no SIGBUS), and its five index arrays present with one entry per image."""
    import numpy as np

    name = entry["name"]
    data = fmt.shard_path(part_dir, name) / "data.mdb"
    try:
        size = data.stat().st_size
    except OSError:
        raise ConvertRefused(f"{data}: shard {name} of the part is missing; {redo_hint(part_dir)}") from None
    problem = (
        f"has {size} bytes, its record says {entry['bytes']} (truncated or replaced)"
        if size != entry["bytes"]
        else fmt.lmdb_file_problem(data)
    )
    if problem:
        raise ConvertRefused(f"{data}: shard {name} of the part {problem}; {redo_hint(part_dir)}")
    for array, dtype in {**fmt.INDEX_ARRAYS, **fmt.OPTIONAL_INDEX_ARRAYS}.items():
        path = fmt.index_path(part_dir, name, array)
        if array in fmt.OPTIONAL_INDEX_ARRAYS and not path.exists():
            continue  # a part converted before the array existed
        try:
            a = np.load(path, mmap_mode="r", allow_pickle=False)
            length = entry["images"] + (array == "tag_offsets")
            ok = a.dtype == np.dtype(dtype) and a.ndim == 1 and (array == "tag_ids" or a.shape[0] == length)
        except (OSError, ValueError, EOFError):
            ok = False
        if not ok:
            raise ConvertRefused(f"{path}: index file of shard {name} missing or malformed; {redo_hint(part_dir)}")


def check_content(part_dir: Path, entry: dict) -> None:
    """The shard's bytes (and index arrays, where recorded) against their recorded sha256, before they are
    renamed or rewritten into the dataset."""
    name = entry["name"]
    data = fmt.shard_path(part_dir, name) / "data.mdb"
    if fmt.file_sha256(data) != entry["sha256"]:
        raise ConvertRefused(
            f"{data}: shard {name} of the part does not match its recorded sha256 (damaged); {redo_hint(part_dir)}"
        )
    for array, digest in (entry.get("index") or {}).items():
        path = fmt.index_path(part_dir, name, array)
        if fmt.file_sha256(path) != digest:
            raise ConvertRefused(f"{path}: does not match its recorded sha256 (damaged); {redo_hint(part_dir)}")


def verified_or_refused(out: Path) -> None:
    """The merged dataset passes `tagstream verify`, or its manifest is removed (it must not look whole) and
    ConvertRefused names the problems; the parts are kept either way, so nothing is lost."""
    from tagstream.tools.verify.checks import verify

    report = verify(out)
    if not report.ok:
        (out / fmt.MANIFEST).unlink(missing_ok=True)
        shown = "; ".join(str(p) for p in report.problems[:3])
        raise ConvertRefused(
            f"{out}: the merged dataset does not verify ({len(report.problems)} problem(s): {shown}); its manifest "
            "was removed and the parts kept: `tagstream verify` names the damage, convert the part it came from "
            "again and merge"
        )
