"""The run directory: the saved resolved config, refusal of another run's directory, and the run log
(metrics.jsonl, a progress bar and TensorBoard on rank 0).

Losses stay on the device and are fetched once per log window, so logging costs one CPU-GPU sync per
window, not per step; every step's loss is still recorded (the exact-resume guarantee is checked on them).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from tagstream.loader.data import write_text_atomic
from tagstream.train import checkpoint as ckpt
from tagstream.train import distributed as dd
from tagstream.train.config import TrainConfig
from tagstream.train.finite import check_window

CONFIG = "config.json"
METRICS = "metrics.jsonl"
LOCK = ".lock"


class RunLock:
    """An exclusive lock on a run directory for the life of a run (taken by rank 0): a second run started into the
    same directory is refused at once, naming the process that holds it, instead of both writing there. The lock
    (a POSIX lock on OUT/.lock) goes with the process, so a killed run never leaves it held. A run refused
    before it wrote anything (its config, data or set-up) takes back the lock file and the folders it made."""

    def __init__(self, out: str | Path):
        self.path = Path(out) / LOCK
        self._file: Any = None
        self._made: list[Path] = []  # folders this lock created, innermost first, and the lock file

    def __enter__(self) -> "RunLock":
        check_is_directory(self.path.parent)
        self._made = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self._made.insert(0, self.path)
        f = open(self.path, "a+")
        try:  # a POSIX record lock: held by this process only (not by the loader workers it forks), gone with it
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise ValueError(
                f"{self.path.parent} is in use by another run (pid {holder}); wait for it to end or "
                "choose another run.out_dir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if self._file is None:
            return
        if kind is not None and self.path in self._made and os.listdir(self.path.parent) == [LOCK]:
            self.path.unlink()  # refused before writing anything: undo what this run made
            for folder in self._made[1:]:
                try:
                    folder.rmdir()  # only while empty
                except OSError:
                    break
        self._file.close()  # releases the lock (after the unlink: no other run took it in between)
        self._file = None


def _differences(old: dict, new: dict) -> list[str]:
    keys = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        keys += [f"{section}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return keys


def check_is_directory(out: Path) -> None:
    """The run directory is a directory or does not exist yet (then it is made)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"run.out_dir {out} is a file, not a directory; choose a directory for the run")


def check_out_dir(out: Path, config: TrainConfig, *, resuming: bool) -> None:
    """Refuse a path that is not a directory, a directory that holds another run, or this run's checkpoints
    when not resuming."""
    check_is_directory(out)
    config_path = out / CONFIG
    if not config_path.exists() or resuming:
        return
    try:
        old = json.loads(config_path.read_text())
    except json.JSONDecodeError:
        old = {}
    diff = _differences(old, config.to_dict())
    if diff:
        raise ValueError(
            f"{out} holds another run (its {CONFIG} differs in {', '.join(diff[:8])}); "
            "choose a new run.out_dir, or pass --resume to continue that run"
        )
    if ckpt.list_checkpoints(out):
        raise ValueError(
            f"{out} already holds checkpoints of this run; pass --resume to continue it or choose a new run.out_dir"
        )


def init_out_dir(out: Path, config: TrainConfig, *, resume_step: int | None) -> None:
    """Save the resolved config; start metrics.jsonl afresh, or on resume cut it back to the checkpoint's
    step (records a killed run wrote after its last checkpoint describe steps about to be re-run)."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / CONFIG, config.to_json())
    metrics = out / METRICS
    if metrics.exists():
        if resume_step is None:
            metrics.unlink()
        else:
            kept = [line for line in metrics.read_text().splitlines() if _record_step(line) <= resume_step]
            write_text_atomic(metrics, "".join(line + "\n" for line in kept))


def step_losses(out: str | Path) -> dict[int, float]:
    """Every optimizer step's loss recorded in OUT/metrics.jsonl (the "train" records RunLog writes): step -> loss."""
    steps: dict[int, float] = {}
    for line in (Path(out) / METRICS).read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "train":
            steps.update({record["first_step"] + i: loss for i, loss in enumerate(record["losses"])})
    return steps


def _record_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 1 << 62  # a torn last line of a killed run: drop it


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


class RunLog:
    """Per-step losses and timings, flushed in windows to metrics.jsonl, the bar and TensorBoard (rank 0).

    data_wait is the share of the window's wall time this rank spent waiting for the loader: near 0
    means the loader keeps up, near 1 means training is input-bound.
    """

    def __init__(
        self, out: Path, config: TrainConfig, *, dist: dd.Dist, total_steps: int, start_step: int, images_per_step: int
    ):
        from tagstream.loader import progress_bar

        self.dist = dist
        self.images_per_step = images_per_step
        main = dist.is_main
        self.file = open(out / METRICS, "a", encoding="utf-8") if main else None
        self.tb = _tensorboard(out) if main else None
        self.bar = progress_bar(
            total=total_steps,
            initial=start_step,
            disable=not (main and config.run.progress),
            unit="step",
            dynamic_ncols=True,
            desc="train",
        )
        self.losses: list[torch.Tensor] = []
        self.grad_norms: list[torch.Tensor] = []
        self.first_step = start_step + 1
        self.window_wait = 0.0
        self.window_start = time.perf_counter()
        self.windows: list[dict[str, float]] = []
        self.last_loss = float("nan")

    def event(self, kind: str, **fields: Any) -> None:
        record = {"kind": kind, **fields, "time": time.time()}
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.tb is not None and kind == "eval":
            for key, value in fields.items():
                if key != "step":
                    self.tb.add_scalar(f"eval/{key}", value, fields["step"])

    def step(
        self,
        step: int,
        loss: torch.Tensor,
        grad_norm: torch.Tensor,
        wait_s: float,
        *,
        lr: float,
        epoch: int,
        flush: bool,
    ) -> None:
        self.losses.append(loss)
        self.grad_norms.append(grad_norm)
        self.window_wait += wait_s
        self.bar.update(1)
        if flush:
            self._flush(step, lr=lr, epoch=epoch)

    def _flush(self, step: int, *, lr: float, epoch: int) -> None:
        # mean over ranks of every step's loss: one collective and one CPU-GPU sync per window
        losses = dd.all_reduce_mean(torch.stack(self.losses).float(), self.dist).cpu().tolist()
        # the gradients are all-reduced already: every rank holds the same norms, so every rank stops alike
        grad_norms = torch.stack([g.float().to(self.losses[0].device) for g in self.grad_norms]).cpu().tolist()
        check_window(losses, grad_norms, self.first_step)  # stop rather than burn GPU hours on a diverged run
        seconds = time.perf_counter() - self.window_start
        n = len(losses)
        rate = n * self.images_per_step / seconds
        share = self.window_wait / seconds
        self.windows.append({"steps": n, "seconds": seconds, "wait": self.window_wait})
        self.last_loss = sum(losses) / n
        self.event(
            "train",
            step=step,
            epoch=epoch,
            first_step=self.first_step,
            losses=losses,
            loss=self.last_loss,
            lr=lr,
            images_per_s=rate,
            data_wait=share,
        )
        self.bar.set_postfix(loss=f"{self.last_loss:.4f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}", wait=f"{share:.0%}")
        if self.tb is not None:
            for key, value in (("loss", self.last_loss), ("lr", lr), ("images_per_s", rate), ("data_wait", share)):
                self.tb.add_scalar(f"train/{key}", value, step)
        self.losses, self.grad_norms, self.first_step, self.window_wait = [], [], step + 1, 0.0
        self.window_start = time.perf_counter()

    def summary(self, *, step: int, **fields: Any) -> dict[str, Any]:
        """Throughput over the whole run and over the steady state (all windows after the first, which
        includes the loader's start-up); written as the last record of metrics.jsonl."""

        def rates(windows: list[dict[str, float]]) -> tuple[float, float]:
            seconds = sum(w["seconds"] for w in windows)
            if not seconds:
                return float("nan"), float("nan")
            return sum(w["steps"] for w in windows) * self.images_per_step / seconds, sum(
                w["wait"] for w in windows
            ) / seconds

        rate, share = rates(self.windows)
        steady_rate, steady_share = rates(self.windows[1:])
        out = {
            "step": step,
            "loss": self.last_loss,
            "images_per_s": rate,
            "data_wait": share,
            "steady_images_per_s": steady_rate,
            "steady_data_wait": steady_share,
            **fields,
        }
        self.event("summary", **out)
        return out

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
