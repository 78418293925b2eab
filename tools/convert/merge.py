"""`tagstream merge OUT`: the committed parts of a partitioned conversion -> one dataset, the same records in the
same order as a one-process conversion of the same inputs (shard boundaries fall at part ends as well).

Global tag ids: a one-process conversion numbers tags in order of first appearance over the inputs. A part
numbers its own tags the same way inside its range, so walking the parts in order and appending each part's
tags not seen before gives exactly the one-process table; a part's local id l becomes global id
table[part_tags[l]]. A shard whose ids all keep their value (every shard of part 0) is renamed into place;
any other is rewritten record by record with the global ids (same image bytes, same source ids, tag ids
re-sorted as the writer stores them).

Trust: every part's commit record and shard files are checked before anything is renamed or rewritten, each
shard's content against its sha256 just before it is (tools/convert/part_checks.py).

Crash safety: each global shard is placed atomically and then recorded in OUT/.convert/NNNNN.json, the same
state a one-process conversion writes, so a killed merge reruns from the shards already placed; tags.tsv,
rejects.jsonl and the manifest follow (tools/convert/engine.finish), and the parts are deleted last, once the
merged dataset passes `tagstream verify` (otherwise its manifest is removed and the parts kept).

Memory: the driver keeps the tag table and one small record per shard. Rejects stay in the parts' state files
until each global shard's placement copies them into its own state file; a part's tag map goes to a file in
the part (`tag_map.npy`) that the shards' placements read.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagstream.loader.data import ShardWriter, read_manifest, write_index
from tagstream.loader.data import format as fmt
from tagstream.tools.convert.engine import ConvertRefused, ConvertSummary, finish, locked, summary
from tagstream.tools.convert.outdir import read_state, writing
from tagstream.tools.convert.part_checks import (
    check_content,
    check_record,
    check_shard_files,
    check_shard_states,
    redo_hint,
    verified_or_refused,
)
from tagstream.tools.convert.parts import PARTS_DIR, PartSpec, parse_part_name, part_root, read_part
from tagstream.tools.convert.pool import process_pool
from tagstream.tools.convert.shards import STATE_DIR, shard_intact, slim, state_path

_SAME_AS_STATE = ("source", "fingerprint", "inputs", "options")
TAG_MAP = "tag_map.npy"  # in a part whose tag ids change: local id -> global id
TAIL = "tail"


@dataclass(frozen=True)
class ShardMove:
    """One global shard of the merged dataset: where it comes from and the state it is recorded with."""

    out: str  # the dataset being merged
    part_dir: str  # the part's directory
    part_shard: str  # the shard's name inside the part
    state: dict  # its global state but the rejects (name, input range, global new tags, re-encode counts)
    part_state: dict = field(repr=False)  # its state inside the part (name, images, bytes, sha256)
    relabel: bool  # its tag ids change (rewrite it with the part's tag_map.npy) or stay (rename it)
    # where its rejects are, in input order: (part directory, shard name) of a part's shard state file, or
    # (part directory, TAIL): a part's rejects after its last shard (in part.json)
    rejects_from: tuple[tuple[str, str], ...] = ()


def merge(
    out: str | Path, *, workers: int = 1, place_all: Callable[[Sequence[ShardMove]], list[dict]] | None = None
) -> ConvertSummary:
    """Merge OUT/parts/* into the dataset OUT; refuses (nothing written) unless all N parts are committed from
    the scan recorded in OUT. `place_all` places the shards (default: over `workers` processes of this
    machine; the Ray engine spreads them over the cluster)."""
    t0 = time.perf_counter()
    place_all = place_all or place_in_processes(workers)
    out = Path(out).resolve()
    state_file = out / STATE_DIR / "state.json"
    if not state_file.exists():
        raise ConvertRefused(
            f"{out} holds no conversion (no {STATE_DIR}/state.json); run `tagstream convert SRC OUT --part I/N` first"
        )
    wanted = read_state(state_file)
    count = wanted.get("options", {}).get("parts")
    if not isinstance(count, int):
        raise ConvertRefused(f"{out} holds a one-process conversion, not a partitioned one: nothing to merge")
    with locked(out):
        if (out / fmt.MANIFEST).exists():
            if (out / PARTS_DIR).exists():  # left by a merge killed after its manifest: deleted once it verifies
                verified_or_refused(out)
                shutil.rmtree(out / PARTS_DIR)
            return summary(
                out,
                read_manifest(out),
                already=True,
                resumed=wanted["inputs"],
                processed=0,
                seconds=time.perf_counter() - t0,
            )
        records = committed_parts(out, wanted)
        moves, tail = plan_moves(out, records)
        for move in moves:  # every part's shard checked before anything is renamed or rewritten
            renamed = not move.relabel and not fmt.shard_path(Path(move.part_dir), move.part_shard).exists()
            if _placed(move) is None and not (renamed and fmt.shard_path(out, move.state["name"]).exists()):
                check_shard_files(Path(move.part_dir), move.part_state)  # (a renamed one: verified at the end)
        with writing(out, "the merged dataset"):  # a full disk: one line, the parts kept, a rerun resumes
            placed = place_all(moves)
            for sub in (fmt.SHARDS_DIR, fmt.INDEX_DIR):
                (out / sub).mkdir(exist_ok=True)
            manifest = finish(out, placed, _rejects(tail), wanted)
        verified_or_refused(out)
        shutil.rmtree(out / PARTS_DIR)
    return summary(
        out, manifest, already=False, resumed=0, processed=wanted["inputs"], seconds=time.perf_counter() - t0
    )


def committed_parts(out: Path, wanted: dict) -> list[dict]:
    """The N parts' commit records in order; ConvertRefused names every part missing, foreign or of another N."""
    count = wanted["options"]["parts"]
    root = out / PARTS_DIR
    names = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    specs = [parse_part_name(n) for n in names]
    strays = [n for n, s in zip(names, specs) if s is None]
    if strays:
        raise ConvertRefused(
            f"{root} holds entries that are not parts ({', '.join(strays[:5])}); remove them and rerun"
        )
    other_n = sorted({s.count for s in specs if s.count != count})
    if other_n:
        raise ConvertRefused(
            f"{root} holds parts of N={', '.join(map(str, other_n))} beside this conversion's N={count} "
            f"(parts of different N cannot be merged); delete them or convert into another OUT"
        )
    records, missing = [], []
    for index in range(count):
        spec = PartSpec(index, count)
        lo, hi = spec.input_range(wanted["inputs"])
        record = read_part(part_root(out, spec)) if spec.name in names else None
        if record is None:
            missing.append(f"{spec} (inputs {lo}..{hi - 1})" if hi > lo else f"{spec} (no inputs)")
            continue
        foreign = [k for k in _SAME_AS_STATE if record.get(k) != wanted[k]] if isinstance(record, dict) else []
        if foreign or (isinstance(record, dict) and record.get("part") != [index, count]):
            raise ConvertRefused(
                f"part {spec} in {part_root(out, spec)} was converted from another source or with other options "
                f"({', '.join(foreign) or 'part number'} differ from {out / STATE_DIR / 'state.json'}); "
                f"delete it and convert it again with --part {spec}"
            )
        check_record(part_root(out, spec), record, lo, hi)
        check_shard_states(part_root(out, spec), record)
        records.append(record)
    if missing:
        raise ConvertRefused(
            f"{out}: {len(missing)} of {count} parts not committed yet: {', '.join(missing[:10])}"
            f"{' ...' if len(missing) > 10 else ''}; run `tagstream convert SRC OUT --part I/{count}` for each, then merge"
        )
    return records


def plan_moves(out: Path, records: list[dict]) -> tuple[list[ShardMove], tuple[tuple[str, str], ...]]:
    """The global shards in input order, and where the rejects after the last one are; writes each part's tag
    map (local id -> global id) to its tag_map.npy where the ids change."""
    table: dict[str, int] = {}
    moves: list[ShardMove] = []
    carried: tuple[tuple[str, str], ...] = ()  # rejects after a part's last shard belong to the next global shard
    carried_count, start = 0, 0
    for record in records:
        part_dir = str(part_root(out, PartSpec(*record["part"])))
        before = len(table)
        tag_map = np.array([table.setdefault(t, len(table)) for s in record["shards"] for t in s["new_tags"]], np.int64)
        relabel = not np.array_equal(tag_map, np.arange(len(tag_map)))
        if relabel:
            fmt.save_npy_atomic(Path(part_dir) / TAG_MAP, tag_map)
        for s in record["shards"]:
            state = {
                "name": fmt.shard_name(len(moves)),
                "input_start": start,
                "input_stop": s["input_stop"],
                "new_tags": [t for t in s["new_tags"] if table[t] >= before],  # first seen here, globally
                "rejected": carried_count + s["rejected"],
                "reencoded": s["reencoded"],
            }
            moves.append(
                ShardMove(str(out), part_dir, s["name"], state, s, relabel, carried + ((part_dir, s["name"]),))
            )
            carried, carried_count, start = (), 0, s["input_stop"]
        carried += ((part_dir, TAIL),)
        carried_count += len(record["tail"])
    return moves, carried


def _rejects(refs: Sequence[tuple[str, str]]) -> list[dict]:
    """The rejects at these references, in order."""
    rejects: list[dict] = []
    for part_dir, where in refs:
        if where == TAIL:
            rejects += read_part(Path(part_dir))["tail"]
        else:
            rejects += json.loads(state_path(Path(part_dir), int(where)).read_text())["rejects"]
    return rejects


def _place_here(moves: Sequence[ShardMove]) -> list[dict]:
    return [place(m) for m in moves]


def place_in_processes(workers: int) -> Callable[[Sequence[ShardMove]], list[dict]]:
    """A `place_all` for `merge` spreading the shards over `workers` processes of this machine."""
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if workers == 1:
        return _place_here

    def place_all(moves: Sequence[ShardMove]) -> list[dict]:
        with process_pool(workers) as pool:
            return list(pool.map(place, moves))

    return place_all


def place(move: ShardMove) -> dict:
    """Put one shard in place under OUT with its global name and record its state; idempotent (a rerun after a
    kill at any point finishes the job). Returns the global state, as engine.finish takes it."""
    done = _placed(move)
    if done is not None:  # placed by an earlier, killed merge
        return done
    out = Path(move.out)
    name = move.state["name"]
    recorded = state_path(out, int(name))
    part_dir = Path(move.part_dir)
    source = fmt.shard_path(part_dir, move.part_shard)
    target = fmt.shard_path(out, name)
    (out / fmt.SHARDS_DIR).mkdir(exist_ok=True)
    if source.exists():
        check_content(part_dir, move.part_state)
    if not move.relabel:
        entry = {k: move.part_state[k] for k in ("images", "bytes", "sha256")}
        if source.exists():
            arrays = _index_arrays(part_dir, move.part_shard, [*fmt.INDEX_ARRAYS, *fmt.OPTIONAL_INDEX_ARRAYS])
            entry["index"] = write_index(out, name, **arrays)
            if target.exists():
                shutil.rmtree(target)
            os.replace(source, target)
            fmt.fsync_dir(target.parent)
        elif not target.exists():
            raise ConvertRefused(
                f"shard {move.part_shard} of {part_dir} is gone and not in place as {name}; "
                f"delete {out / PARTS_DIR / part_dir.name} and convert that part again"
            )
        state = {**move.state, "name": name, **entry}
    else:
        tag_map = np.load(part_dir / TAG_MAP)
        state = {**move.state, **_relabel(part_dir, move.part_shard, out, int(name), tag_map)}
    fmt.write_json_atomic(recorded, {**state, "rejects": _rejects(move.rejects_from)})
    return slim(state)


def _index_arrays(part_dir: Path, part_shard: str, names: list[str]) -> dict[str, np.ndarray]:
    """A part's index arrays of one shard by name; an optional one the part lacks is left out."""
    paths = {a: fmt.index_path(part_dir, part_shard, a) for a in names}
    return {a: np.load(p) for a, p in paths.items() if a in fmt.INDEX_ARRAYS or p.exists()}


def _placed(move: ShardMove) -> dict | None:
    """The global state of a shard an earlier, killed merge already placed (intact, as planned), else None."""
    out = Path(move.out)
    recorded = state_path(out, int(move.state["name"]))
    try:
        state = json.loads(recorded.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(state, dict) and shard_intact(out, state) and all(state.get(k) == v for k, v in move.state.items()):
        return slim(state)
    return None


def _relabel(part_dir: Path, part_shard: str, out: Path, shard: int, tag_map: np.ndarray) -> dict:
    """Rewrite a part's shard under OUT with global tag ids; returns its manifest entry."""
    index = _index_arrays(part_dir, part_shard, ["width", "height", "phash", *fmt.OPTIONAL_INDEX_ARRAYS])
    boxes = fmt.unpack_boxes(index["content_box"]) if "content_box" in index else None
    writer = ShardWriter(out, shard)
    env = fmt.open_env(fmt.shard_path(part_dir, part_shard))
    try:
        with env.begin(buffers=True) as txn:
            for i, (key, value) in enumerate(txn.cursor()):
                if fmt.decode_key(bytes(key)) != i:
                    raise fmt.FormatError(f"{part_dir}/{part_shard}: record {i} has key {fmt.decode_key(bytes(key))}")
                rec = fmt.unpack_record(bytes(value))
                tags = np.asarray(rec["tags"], np.int64)
                if tags.size and not 0 <= tags.min() <= tags.max() < len(tag_map):  # a part.json edited or damaged
                    raise ConvertRefused(
                        f"{part_dir}/{part_shard}: record {i} has tag id {tags.max() if tags.min() >= 0 else tags.min()}"
                        f" but the part's part.json lists {len(tag_map)} new tags; {redo_hint(part_dir)}"
                    )
                writer.add(
                    rec["image"],
                    tag_map[tags].tolist(),
                    rec["source"],
                    width=int(index["width"][i]),
                    height=int(index["height"][i]),
                    phash=int(index["phash"][i]),
                    content_box=boxes[i].tolist() if boxes is not None else None,
                )
        return writer.commit()
    finally:
        env.close()
        writer.abort()
