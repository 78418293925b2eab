"""The rehearsal's results: what each stage found (images converted, recall of the planted copies, the kill and the
resume, first-batch times, transfer accuracy), docs/scale.md's per-image predictions beside the measured rates,
and the Markdown table (WORKDIR/rehearsal.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tagstream.tools.bench.rehearsal_context import MASK, MASK_BOTH, Context
from tagstream.tools.bench.rehearsal_inputs import paths
from tagstream.tools.bench.rehearsal_train import checkpoints

# docs/scale.md's per-image predictions from small runs: step name -> (quantity, value, where in docs/scale.md).
# "cpu_ms": CPU ms per image of the step's whole process tree; "wall_us": wall µs per image.
PREDICTED: dict[str, tuple[str, float, str]] = {
    # §1 "Per-core cost": 640x480 inputs kept byte for byte, 5.0-5.9 CPU ms per image (ours are 160x120, so the
    # per-image decode is ~16x smaller: the ratio shows what is not per pixel)
    "convert --engine ray": ("cpu_ms", 5.0, "§1 Per-core cost (kept byte for byte)"),
    # §3 "Vocabulary": 2 x 10^6 images in 1.82 s, 1.1 x 10^6 images/s in one process
    "vocab": ("wall_us", 0.91, "§3 Vocabulary"),
    # §3 "De-duplication": 10^7 training hashes joined against 10^5 in 9.6 s (the join alone)
    "dedup --method hash": ("wall_us", 0.96, "§3 De-duplication (join only)"),
    # "De-duplication at scale": IVF 1,701 queries per CPU second against 10^5 evaluation vectors, d = 512
    "dedup --method both": ("cpu_ms", 1e3 / 1701, "De-duplication at scale (kNN join)"),
}
STORED_OVER_INPUT = 1.016  # §2 "Bytes per image": a kept JPEG costs its own size plus 1.6 %


def rate_columns(record: dict) -> dict:
    """Per-image figures of a step record and, where docs/scale.md predicts one, prediction and ratio."""
    images = record.get("images") or 0
    out = {
        "wall_ms_per_image": record["wall_s"] * 1e3 / images if images else None,
        "cpu_ms_per_image": record["cpu_s"] * 1e3 / images if images else None,
    }
    if record["step"] in PREDICTED and images:
        quantity, value, where = PREDICTED[record["step"]]
        measured = out["cpu_ms_per_image"] if quantity == "cpu_ms" else record["wall_s"] * 1e6 / images
        out["predicted"] = {"quantity": quantity, "value": value, "where": where, "measured": measured}
        out["predicted"]["ratio"] = measured / value
    return out


def planted_recall(ctx: Context, mask: str) -> dict | None:
    """Recall of the planted copies in a dedup run's pairs (overall, per edit and method), and the pairs that
    are not planted (near copies the generator made by accident, or false matches)."""
    from tagstream.tools.dedup.pairs import mask_paths, read_pair_columns

    pairs_path = mask_paths(ctx.path("ds"), mask)[1]
    planted_path = paths(ctx.workdir)["planted"]
    if not pairs_path.is_file() or not planted_path.is_file():
        return None
    planted = json.loads(planted_path.read_text())["pairs"]
    positions = _positions(ctx)
    found = [(positions["ds"].get(p["train_key"], -1), positions["eval"].get(p["eval_key"], -1)) for p in planted]
    # columns: 10^7 pairs at 10^6 images (one evaluation set)
    return recall_of(read_pair_columns(pairs_path), [p["edit"] for p in planted], found)


def recall_of(table, edits: list[str], planted: list[tuple[int, int]]) -> dict:
    """The recall of planted (train index, eval index) pairs (-1: not in the dataset) with edit names `edits`
    among a pairs file's columns (a tools.dedup.pairs.PairTable); each (train, eval) pair counts once, its
    last row's flags."""
    n = int(table.eval.max()) + 1 if len(table) else 1
    keys, last = np.unique((table.train * n + table.eval)[::-1], return_index=True)  # sorted, for searchsorted
    rows = len(table) - 1 - last
    by_edit: dict[str, dict[str, int]] = {}
    for edit, (t, e) in zip(edits, planted):
        k = int(np.searchsorted(keys, t * n + e)) if t >= 0 and 0 <= e < n else keys.size
        row = int(rows[k]) if k < keys.size and keys[k] == t * n + e else None
        tally = by_edit.setdefault(edit, {"planted": 0, "found": 0, "hash": 0, "embed": 0})
        tally["planted"] += 1
        tally["found"] += row is not None
        tally["hash"] += row is not None and bool(table.by_hash[row])
        tally["embed"] += row is not None and bool(table.by_embed[row])
    found = sum(t["found"] for t in by_edit.values())
    return {
        "planted": len(planted),
        "found": found,
        "recall": found / len(planted) if planted else None,
        "by_edit": {k: {**t, "recall": t["found"] / t["planted"]} for k, t in sorted(by_edit.items())},
        "pairs": int(keys.size),
        "pairs_not_planted": int(keys.size) - found,
    }


def _positions(ctx: Context) -> dict[str, dict[str, int]]:
    """Sample key -> dataset index of the training and evaluation datasets: the conversion keeps input order, so
    with no rejects the index is the position; the planted rows are checked against their records' source."""
    from tagstream.loader.data import Dataset, ShardStore

    planted = json.loads(paths(ctx.workdir)["planted"].read_text())["pairs"]
    out = {}
    for name, field in (("ds", "train"), ("eval", "eval")):
        dataset = Dataset(ctx.path(name))
        store = ShardStore(dataset)
        found = {}
        for p in planted:
            i = p[f"{field}_position"]
            if i < dataset.num_images and store.read(i)["source"] == p[f"{field}_key"]:
                found[p[f"{field}_key"]] = i
        out[name] = found
    return out


def first_batches(run_dir: Path) -> list[dict]:
    """For each start of a run (the first, each resume): seconds waited for the first batch (the first step's
    data-wait share of its window, with run.log_every=1) and from the start record to the first step's end."""
    out, start = [], None
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return out
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "start":
            start = record
        elif record.get("kind") == "train" and start is not None:
            window = len(record["losses"]) * 64 / record["images_per_s"]
            out.append(
                {
                    "world": start["world"],
                    "resumed_from": start["resumed_from"],
                    "first_step": record["first_step"],
                    "first_batch_wait_s": record["data_wait"] * window,
                    "to_first_step_s": record["time"] - start["time"],
                }
            )
            start = None
    return out


def stage_results(ctx: Context, stage: str) -> dict:
    """What a finished stage found, for rehearsal.json."""
    if stage == "inputs":
        return json.loads(paths(ctx.workdir)["done"].read_text())
    if stage == "convert":
        manifest = json.loads(ctx.path("ds", "manifest.json").read_text())
        images = int(manifest["images"])
        stored = sum(int(s["bytes"]) for s in manifest["shards"])
        jpeg = json.loads(paths(ctx.workdir)["done"].read_text())["train_jpeg_bytes"]
        return {
            "converted": images,
            "expected": ctx.samples,
            "shards": len(manifest["shards"]),
            "stored_bytes": stored,
            "stored_over_input_jpeg": stored / jpeg if jpeg else None,
            "predicted_stored_over_input": STORED_OVER_INPUT,
        }
    if stage == "dedup":
        return {"recall": planted_recall(ctx, MASK)}
    if stage == "embed":
        return {"recall": planted_recall(ctx, MASK_BOTH)}
    if stage == "train":
        run_dir = ctx.path("runs", "main")
        saved = checkpoints(run_dir)
        starts = first_batches(run_dir)
        return {
            "killed_at_step": ctx.facts.get("killed_at_step"),
            "killed_in_epoch": ctx.facts.get("killed_in_epoch"),
            "killed_epoch_step": ctx.facts.get("killed_epoch_step"),
            "resumed": any(s["resumed_from"] for s in starts),
            "resumed_from": next((s["resumed_from"] for s in starts if s["resumed_from"]), None),
            "final_checkpoint": saved[-1].name if saved else None,
            "first_batch": starts,
        }
    if stage == "s3":
        return {"first_batch": first_batches(ctx.path("runs", "s3")), "endpoint": ctx.facts.get("s3_endpoint")}
    if stage == "transfer":
        report = json.loads(ctx.path("reports", "transfer.json").read_text())
        pre = report["results"]["pretrained"]
        return {"top1": pre.get("top1"), "low_shot": pre.get("low_shot")}
    return {}


def _num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _row(r: dict, note: str) -> str:
    unit = {"cpu_ms": "CPU ms", "wall_us": "wall µs"}
    pred = r.get("predicted")
    predicted = f"{pred['value']:.3g} {unit[pred['quantity']]} ({pred['where']})" if pred else "-"
    ratio = f"{pred['ratio']:.2f}" if pred else "-"
    return (
        f"| {r['stage']} | {r['step']}{note} "
        f"| {_num(r['wall_s'], 1)} | {_num(r['cpu_s'], 1)} | {_num(r['peak_rss_mib'], 0)} "
        f"| {_num(r.get('peak_anon_mib'), 0)} "
        f"| {_num(r['disk_bytes'] / 2**20, 1)} | {r['images']:,} | {_num(r['wall_ms_per_image'], 3)} "
        f"| {_num(r['cpu_ms_per_image'], 3)} | {predicted} | {ratio} |"
    )


def format_table(result: dict) -> str:
    """rehearsal.md: the settings, one row per step, then what the stages found."""
    s = result["settings"]
    lines = [
        f"# Rehearsal: {s['images']:,} images (+{s['planted']} planted copies), {s['eval_images']:,} evaluation images",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']['cpus']} CPUs, load average at start {result['machine']['load_at_start']}, "
        f"at end {result['machine'].get('load_at_end', '-')}; {result['started']}",
        "",
        "| stage | step | wall s | CPU s | peak RSS MiB | peak anon MiB | disk after MiB | images "
        "| wall ms/image | CPU ms/image | predicted (docs/scale.md) | measured / predicted |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for step in result["steps"]:
        lines += [_row(e, " (earlier run, before --redo)") for e in step.get("earlier", [])]
        lines.append(_row(step, " (skipped: done before)" if step.get("skipped") else ""))
    lines += ["", "## What the stages found", "", "```json", json.dumps(result["results"], indent=1), "```", ""]
    return "\n".join(lines)
