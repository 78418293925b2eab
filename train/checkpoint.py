"""Checkpoints: written atomically (temp file, fsync, rename), the last K kept, validated on load.

A checkpoint is a dict saved with torch.save holding only tensors and plain Python values, so it loads
with weights_only=True (no pickled code runs on load):
  format, version, model (state_dict of the bare model), model_name, num_classes, optimizer, schedule,
  step (optimizer steps done), loader (the train loader's state_dict), config (the resolved TrainConfig
  as a dict), rng (torch CPU and CUDA generator states), world (ranks that wrote it), metrics.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from tagstream.loader.format import fsync_dir

FORMAT = "tagstream-checkpoint"
VERSION = 1
_NAME = re.compile(r"^step-(\d{9})\.pt$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}.pt"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run directory, oldest first (temp files never match)."""
    d = Path(out_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME.match(p.name))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def save_checkpoint(state: dict[str, Any], out_dir: str | Path, *, keep_last: int) -> Path:
    """Write state as out_dir/step-NNNNNNNNN.pt atomically, then delete all but the newest keep_last.

    The bytes go to a hidden temp name in the same directory, are fsynced, and only then renamed:
    a crash at any instant leaves either the previous set of checkpoints or the new one, never a
    truncated file under a checkpoint name.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last={keep_last} must be >= 1")
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    final = d / checkpoint_name(int(state["step"]))
    tmp = d / f".{final.name}.{os.getpid()}.tmp"
    payload = {"format": FORMAT, "version": VERSION, **state}
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(d)
    for old in list_checkpoints(d)[:-keep_last]:
        old.unlink(missing_ok=True)
    return final


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's dict on CPU; refuses files that are not tagstream checkpoints or of an unknown version."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        raise ValueError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tagstream checkpoint")
    if state.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint version {state.get('version')!r} is not supported (known: {VERSION})")
    return state


def check_compatible(state: dict[str, Any], *, model_name: str, num_classes: int, path: str | Path = "checkpoint") -> None:
    """Refuse to resume a checkpoint of a different architecture or head size, naming both."""
    if state["model_name"] != model_name or state["num_classes"] != num_classes:
        raise ValueError(
            f"{path} holds model {state['model_name']!r} with {state['num_classes']} classes, but this run "
            f"builds {model_name!r} with {num_classes} classes; use a new run.out_dir or the same model and vocabulary"
        )


def resolve_resume(out_dir: str | Path, resume: str | None) -> Path | None:
    """--resume: None -> start fresh; "auto" -> the newest checkpoint in out_dir (None if there is none yet,
    so a preempted job can be relaunched with the same command); anything else -> that file, which must exist."""
    if resume is None:
        return None
    if resume == "auto":
        return latest_checkpoint(out_dir)
    path = Path(resume)
    if not path.is_file():
        found = list_checkpoints(out_dir)
        raise ValueError(f"--resume {resume}: no such checkpoint (in {out_dir}: {[p.name for p in found] or 'none'})")
    return path
