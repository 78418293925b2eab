"""The rehearsal's training steps: tiny-cpu under torchrun on 2 ranks with rank 1 SIGKILLed mid-epoch after the
first checkpoint (found among the job's descendants by its RANK), then `--resume` on 1 rank."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from tagstream.tools.bench.rehearsal_context import MASK, VOCAB, Context
from tagstream.tools.bench.rehearsal_measure import Measured, descendants, run_measured


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("step-*.pt"))


def train_args(ctx: Context, dataset: str, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "train",
        "--config",
        "tiny-cpu",
        "--dataset",
        dataset,
        "--vocab",
        VOCAB,
        "--mask",
        MASK,
        "--sampling",
        "sqrt",
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--set",
        f"run.checkpoint_every={max(1, steps // 3)}",
        "--set",
        "run.log_every=1",  # the first record is the first step alone: its data wait is the first batch's
        "--set",
        "run.progress=false",
        # a fresh run where there is no checkpoint yet, else the continuation of one an interrupted rehearsal left
        "--resume",
        *extra,
    ]


def _position(run_dir: Path) -> tuple[int, int, int]:
    """(newest optimizer step, its epoch, steps per epoch) as metrics.jsonl records them ((0, 0, 0) before any)."""
    step = epoch = per_epoch = 0
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            if record.get("kind") == "start":
                per_epoch = int(record["steps_per_epoch"])
            elif record.get("kind") == "train" and int(record["step"]) > step:
                step, epoch = int(record["step"]), int(record["epoch"])
    return step, epoch, per_epoch


def _rank_pids(root: int, rank: int) -> list[int]:
    """Descendants of a torchrun job's process that are worker `rank` (RANK and LOCAL_RANK in their environment)."""
    found = []
    for pid in descendants(root):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and any(e.startswith(b"LOCAL_RANK=") for e in environ):
            found.append(pid)
    return found


def _killer(ctx: Context, run_dir: Path) -> Callable:
    """watch(proc): once the run has written a checkpoint and stepped past it, mid-epoch, SIGKILL rank 1 (once)."""

    def watch(proc) -> None:
        if "killed_at_step" in ctx.facts:
            return
        saved = checkpoints(run_dir)
        if not saved:
            return
        at, epoch, per_epoch = _position(run_dir)
        if at <= int(saved[0].stem.split("-")[1]) or not per_epoch or at % per_epoch == 0:
            return  # not yet past the first checkpoint, or at an epoch's end: mid-epoch is the case to test
        for pid in _rank_pids(proc.pid, 1):
            os.kill(pid, signal.SIGKILL)
            ctx.facts.update(killed_at_step=at, killed_in_epoch=epoch, killed_epoch_step=at % per_epoch)

    return watch


def run_killed_train(ctx: Context) -> Measured:
    out = ctx.path("runs", "main")
    ctx.facts.pop("killed_at_step", None)
    argv = [
        shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "tagstream.tools.cli",
        *train_args(ctx, str(ctx.path("ds")), out, ctx.train_steps),
    ]
    return run_measured(argv, log=ctx.log("train-2-ranks"), env=ctx.env, keep=ctx.keep, watch=_killer(ctx, out))


def set_aside(*names: str) -> Callable[[Context], None]:
    """Before a step runs again (--redo): each WORKDIR/NAME renamed NAME.earlier-K (the next free K), never deleted,
    so the step starts as it did the first time (a train from scratch, an empty rank-local cache)."""

    def move(ctx: Context) -> None:
        for name in names:
            path = ctx.path(*name.split("/"))
            if path.exists():
                k = 1
                while path.with_name(f"{path.name}.earlier-{k}").exists():
                    k += 1
                path.rename(path.with_name(f"{path.name}.earlier-{k}"))

    return move


def train_done(ctx: Context) -> bool:
    return any(p.stem == f"step-{ctx.train_steps:09d}" for p in checkpoints(ctx.path("runs", "main")))


def final_checkpoint(ctx: Context) -> str:
    saved = checkpoints(ctx.path("runs", "main"))
    if not saved:
        raise ValueError(f"{ctx.path('runs', 'main')}: no checkpoint; run the train stage first")
    return str(saved[-1])
