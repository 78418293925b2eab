"""`tagstream bench rehearsal`: every stage a user runs, on N real JPEGs, each step a child process measured for
wall time, CPU time of its process tree, peak RSS and the disk of WORKDIR after it; WORKDIR/rehearsal.json and
rehearsal.md hold the figures beside docs/scale.md's predictions.

Resumable: each finished step is recorded in rehearsal.json at once; a rerun skips a step that is recorded and
whose output is complete, and reruns the others (the commands resume themselves: a conversion continues after
its last committed shard), so a 10^6 run interrupted midway continues where it stopped. `redo` names stages to
run again although they are done (after a fix, to measure it): each new record keeps the ones it replaced under
"earlier", and rehearsal.md shows them beside it.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

from tagstream.tools.bench.rehearsal_context import Context, Step
from tagstream.tools.bench.rehearsal_inputs import InputsSpec
from tagstream.tools.bench.rehearsal_measure import become_subreaper, disk_bytes
from tagstream.tools.bench.rehearsal_report import format_table, rate_columns, stage_results
from tagstream.tools.bench.rehearsal_s3 import s3_server
from tagstream.tools.bench.rehearsal_steps import STAGES, steps

FORMAT = "tagstream-rehearsal"
VERSION = 1
RESULT_JSON = "rehearsal.json"
RESULT_MD = "rehearsal.md"


class RehearsalFailed(Exception):
    """A step failed: its message names the step, its exit status and its log."""


def parse_stages(text: str) -> tuple[str, ...]:
    """'all' or a comma-separated subset of STAGES, returned in pipeline order."""
    if text.strip() == "all":
        return STAGES
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise ValueError(
            f"--stages {text!r}: unknown {', '.join(unknown) or 'empty'}; choose from all, {', '.join(STAGES)}"
        )
    return tuple(s for s in STAGES if s in names)


def _settings(spec: InputsSpec, parts: int, train_steps: int, s3_steps: int) -> dict:
    return {**asdict(spec), "parts": parts, "train_steps": train_steps, "s3_steps": s3_steps}


def _load(workdir: Path, settings: dict, command: str) -> dict:
    path = workdir / RESULT_JSON
    if path.is_file():
        state = json.loads(path.read_text())
        if state.get("format") != FORMAT:
            raise ValueError(f"{path}: not a rehearsal's record (format {state.get('format')!r})")
        mine = {k: v for k, v in settings.items() if k != "workers"}
        theirs = {k: v for k, v in state["settings"].items() if k != "workers"}
        if mine != theirs:
            diff = ", ".join(f"{k}: {theirs.get(k)!r} -> {v!r}" for k, v in mine.items() if theirs.get(k) != v)
            raise ValueError(f"{workdir} holds a rehearsal with other settings ({diff}); use a new WORKDIR")
        return state
    if workdir.exists() and any(p.name not in (RESULT_JSON, RESULT_MD) for p in workdir.iterdir()):
        raise ValueError(f"{workdir} is not empty and holds no {RESULT_JSON}: the rehearsal writes into a new folder")
    return {
        "format": FORMAT,
        "version": VERSION,
        "command": command,
        "settings": settings,
        "machine": {"cpus": os.cpu_count(), "load_at_start": [round(x, 2) for x in os.getloadavg()]},
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "steps": [],
        "results": {},
        "facts": {},
    }


def _save(workdir: Path, state: dict) -> None:
    tmp = workdir / (RESULT_JSON + ".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, workdir / RESULT_JSON)
    (workdir / RESULT_MD).write_text(format_table(state), encoding="utf-8")


def _recorded(state: dict, step: Step) -> dict | None:
    return next((r for r in state["steps"] if r["stage"] == step.stage and r["step"] == step.name), None)


def _is_done(state: dict, step: Step, ctx: Context) -> bool:
    record = _recorded(state, step)
    return record is not None and (step.complete is None or step.complete(ctx))


def _check_order(state: dict, selected: Sequence[str], ctx: Context) -> None:
    """Every stage before a selected one is selected too or already done."""
    for stage in STAGES[: STAGES.index(selected[-1])]:
        if stage in selected:
            continue
        missing = [s.name for s in steps() if s.stage == stage and not _is_done(state, s, ctx)]
        if missing:
            raise ValueError(f"stage {stage!r} has not run yet ({missing[0]}); add it to --stages or run it first")


def run_rehearsal(
    workdir: str | Path,
    *,
    images: int = 1_000_000,
    eval_images: int = 10_000,
    parts: int = 8,
    stages: Sequence[str] = STAGES,
    train_steps: int = 300,
    s3_steps: int = 30,
    seed: int = 0,
    workers: int | None = None,
    redo: Sequence[str] = (),
    command: str = "",
    echo: Callable[[str], None] = print,
) -> dict:
    """Run the selected stages into WORKDIR (new, or an earlier rehearsal's with the same settings); returns the
    record also written to WORKDIR/rehearsal.json (and the table to rehearsal.md)."""
    for name, value, low in (("images", images, 10), ("eval_images", eval_images, 10), ("parts", parts, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} = {value!r}: must be an integer >= {low}")
    if train_steps < 6 or s3_steps < 1:
        raise ValueError(f"train_steps = {train_steps}, s3_steps = {s3_steps}: need >= 6 and >= 1")
    workdir = Path(workdir)
    spec = InputsSpec.for_size(images, eval_images, seed=seed, workers=workers)
    state = _load(workdir, _settings(spec, parts, train_steps, s3_steps), command)
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context(workdir, spec, parts, train_steps, s3_steps, facts=state["facts"])
    selected = tuple(s for s in STAGES if s in stages)
    if set(redo) - set(selected):
        raise ValueError(f"--redo {','.join(redo)}: a stage to run again must be one of --stages too")
    _check_order(state, selected, ctx)
    if not become_subreaper():
        echo("note: not a child subreaper here: CPU time of processes that outlive their parent (Ray's) is not counted")
    for stage in selected:
        stage_steps = [s for s in steps() if s.stage == stage]
        todo = [s for s in stage_steps if stage in redo or not _is_done(state, s, ctx)]
        with s3_server(ctx) if stage == "s3" and todo else nullcontext():
            for step in stage_steps:
                if step not in todo:
                    _recorded(state, step)["skipped"] = True
                    echo(f"== {stage}: {step.name}: done before, skipped")
                    continue
                echo(f"== {stage}: {step.name}")
                if step.set_aside is not None and _recorded(state, step) is not None:
                    step.set_aside(ctx)
                _run_step(ctx, state, step, echo)
        state["results"][stage] = stage_results(ctx, stage)
        _save(workdir, state)
    state["machine"]["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    _save(workdir, state)
    echo(f"wrote {workdir / RESULT_JSON} and {workdir / RESULT_MD}")
    return state


def _run_step(ctx: Context, state: dict, step: Step, echo: Callable[[str], None]) -> None:
    measured = step.run(ctx)
    killed = step.expect_failure and "killed_at_step" in ctx.facts
    if measured.returncode != 0 and not killed:
        raise RehearsalFailed(
            f"{step.stage}: {step.name} failed (exit {measured.returncode}); see {ctx.path('logs')} for its log; "
            "run the same command again to continue from this step"
        )
    record = {
        "stage": step.stage,
        "step": step.name,
        "wall_s": measured.wall_s,
        "cpu_s": measured.cpu_s,
        "cpu_rusage_s": measured.cpu_rusage_s,
        "cpu_sampled_s": measured.cpu_sampled_s,
        "peak_rss_mib": measured.peak_rss_mib,
        "peak_anon_mib": measured.peak_anon_mib,
        "returncode": measured.returncode,
        "lingering_processes": measured.lingering,
        "disk_bytes": disk_bytes(ctx.workdir),
        "images": step.images(ctx),
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    record.update(rate_columns(record))
    before = _recorded(state, step)
    if before is not None:
        earlier = before.pop("earlier", [])
        before.pop("skipped", None)
        record["earlier"] = [*earlier, before]
    state["steps"] = [r for r in state["steps"] if r is not before]
    state["steps"].append(record)
    state["facts"] = ctx.facts
    _save(ctx.workdir, state)
    echo(
        f"   {measured.wall_s:.1f} s wall, {measured.cpu_s:.1f} s CPU, peak RSS {measured.peak_rss_mib:.0f} MiB"
        + (f" (anonymous {measured.peak_anon_mib:.0f} MiB)" if measured.peak_anon_mib is not None else "")
        + (f", rank 1 killed at step {ctx.facts['killed_at_step']}" if killed else "")
    )
