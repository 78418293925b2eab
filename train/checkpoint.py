"""Checkpoints: written atomically (temp file, fsync, rename), the last K kept, validated on load.

A checkpoint is a dict saved with torch.save holding only tensors and plain Python values, so it loads
with weights_only=True (no pickled code runs on load):
  format, version, model (state_dict of the bare model), model_name, num_classes, optimizer, schedule,
  step (optimizer steps done), loader (the train loader's state_dict), config (the resolved TrainConfig
  as a dict), rng (torch CPU and CUDA generator states), world (ranks that wrote it), metrics; and
  checksum: sha256 over every value above (tensor bytes with dtype and shape, plain values as JSON), checked
  on load, so a flipped bit in a weight is refused instead of resumed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from tagstream.loader import MAX_PARTITIONS
from tagstream.loader.data import fsync_dir

FORMAT = "tagstream-checkpoint"
VERSION = 2  # 2: a checksum over the state
READABLE = (1, 2)  # version 1 (no checksum) still loads, unchecked
REQUIRED = ("model", "model_name", "num_classes", "optimizer", "schedule", "step", "loader", "config", "rng", "world")
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
    payload["checksum"] = state_digest(payload)
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(d)
    for old in list_checkpoints(d)[:-keep_last]:
        old.unlink(missing_ok=True)
    return final


def state_digest(state: dict[str, Any]) -> str:
    """sha256 over a checkpoint's content (its "checksum" entry excluded): keys in sorted order, tensors as
    dtype, shape and raw bytes, everything else as JSON. Independent of how torch.save lays the file out."""
    h = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            h.update(b"{")
            for k in sorted(value, key=str):
                if k == "checksum" and value is state:
                    continue
                h.update(json.dumps(str(k)).encode())
                feed(value[k])
            h.update(b"}")
        elif isinstance(value, (list, tuple)):
            h.update(b"[")
            for v in value:
                feed(v)
            h.update(b"]")
        else:
            h.update(json.dumps(value, sort_keys=True, default=repr).encode())

    feed(state)
    return h.hexdigest()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's dict on CPU; refuses (ValueError naming the file) a file that is not a tagstream checkpoint,
    of an unknown version, with missing entries, or whose content does not match its checksum."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        why = " ".join(str(exc).split())[:200] or "empty or cut short"
        raise ValueError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {why})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tagstream checkpoint")
    if state.get("version") not in READABLE:
        raise ValueError(f"{path}: checkpoint version {state.get('version')!r} is not supported (known: {READABLE})")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {', '.join(missing)}")
    if state["version"] >= 2 and state.get("checksum") != state_digest(state):
        raise ValueError(f"{path}: checkpoint content does not match its checksum (damaged on disk?)")
    problem = content_problem(state)
    if problem:
        raise ValueError(
            f"{path}: checkpoint entry {problem} (it matches its checksum: written malformed); resume another"
        )
    return state


def _whole(lo: int, hi: int = (1 << 63) - 1) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _table(value_ok: Any) -> Any:
    return lambda v: isinstance(v, dict) and all(isinstance(k, str) and value_ok(v[k]) for k in v)


def _any(v: Any) -> bool:
    return True


# entry (or entry.key) -> (what it must be, test); checked by type and range after the checksum, so a checkpoint
# written with a string where a dict belongs, or step -5, is refused before it resumes anything
CONTENTS: dict[str, tuple[str, Any]] = {
    "model": ("a table of tensors", _table(lambda t: isinstance(t, torch.Tensor))),
    "model_name": ("a name", lambda v: isinstance(v, str) and 0 < len(v) < 256),
    "num_classes": ("a whole number >= 1", _whole(1)),
    "optimizer": ("a table", _table(_any)),
    "schedule": ("a table", _table(_any)),
    "step": ("a whole number >= 0", _whole(0)),
    "loader": ("a table", _table(_any)),
    "loader.epoch": ("a whole number >= 0", _whole(0)),
    "loader.step": ("a whole number >= 0", _whole(0)),
    "loader.partitions": (
        f"unset or a whole number in [1, {MAX_PARTITIONS}]",
        lambda v: v is None or _whole(1, MAX_PARTITIONS)(v),
    ),
    "loader.world": (f"a whole number in [1, {MAX_PARTITIONS}]", _whole(1, MAX_PARTITIONS)),
    "config": ("a table of sections", _table(lambda v: isinstance(v, dict))),
    "rng": ("a table", _table(_any)),
    "rng.torch": ("a uint8 tensor", lambda t: isinstance(t, torch.Tensor) and t.dtype == torch.uint8),
    "rng.cuda": (
        "a list of uint8 tensors",
        lambda v: isinstance(v, list) and all(isinstance(t, torch.Tensor) for t in v),
    ),
    "optimizer.state": ("a table", lambda v: isinstance(v, dict)),
    "optimizer.param_groups": (
        "a list of tables",
        lambda v: isinstance(v, list) and all(isinstance(g, dict) for g in v),
    ),
    "world": (f"a whole number in [1, {MAX_PARTITIONS}]", _whole(1, MAX_PARTITIONS)),
    "ema": ("a table of tensors", _table(_any)),
}


def check_like(value: Any, like: Any, key: str) -> None:
    """ValueError unless `value` has the structure and value types of `like` (what this run would write: a table
    has its keys, a list its length, a count is a whole number, a rate a finite number)."""
    if isinstance(like, dict):
        if not isinstance(value, dict):
            raise ValueError(f"entry {key} is {type(value).__name__}, not a table")
        for k in like:
            if k in value:
                check_like(value[k], like[k], f"{key}.{k}")
    elif isinstance(like, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(like):
            raise ValueError(f"entry {key} is not a list of {len(like)}")
        for i, (v, w) in enumerate(zip(value, like)):
            check_like(v, w, f"{key}[{i}]")
    elif isinstance(like, bool) or isinstance(like, str) or isinstance(like, torch.Tensor):
        if not isinstance(value, type(like)):
            raise ValueError(f"entry {key} is {type(value).__name__}, not {type(like).__name__}")
    elif isinstance(like, (int, float)):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (isinstance(like, int) and not isinstance(value, int)) or not math.isfinite(value):
            raise ValueError(f"entry {key} is {value!r:.40}, not a finite {type(like).__name__}")


def content_problem(state: dict[str, Any]) -> str:
    """The first entry of a checkpoint's state that is not what CONTENTS says, as "KEY is ... , not ...", or ""."""
    for key, (expected, ok) in CONTENTS.items():
        outer, _, inner = key.partition(".")
        if outer not in state or (inner and not isinstance(state[outer], dict)):
            continue  # missing required entries are named before; optional ones may be absent
        if inner and inner not in state[outer]:
            continue  # a resume refuses a loader state without epoch/step itself; weights-only readers need none
        value = state[outer][inner] if inner else state[outer]
        if not ok(value):
            shown = repr(value) if isinstance(value, (int, float, str)) else type(value).__name__
            return f"{key} is {shown[:60]}, not {expected}"
    return ""


def load_resumable(
    out_dir: str | Path, resume: str | None, *, warn: Any = print
) -> tuple[Path | None, dict[str, Any] | None]:
    """--resume's checkpoint and its state: resume=None -> (None, None); "auto" -> the newest checkpoint of out_dir
    that loads intact, each damaged newer one reported through `warn` and passed over (the run goes back to an older
    step rather than stopping or resuming garbage); a path -> that file, which must load."""
    path = resolve_resume(out_dir, resume)
    if path is None:
        return None, None
    if resume != "auto":
        return path, load_checkpoint(path)
    found = list_checkpoints(out_dir)
    for candidate in reversed(found):
        try:
            return candidate, load_checkpoint(candidate)
        except ValueError as exc:
            older = found.index(candidate)
            warn(f"warning: {exc}; " + (f"falling back to {found[older - 1].name}" if older else "no older checkpoint"))
    raise ValueError(f"{out_dir}: no intact checkpoint to resume from ({len(found)} damaged); start a new run.out_dir")


def check_compatible(
    state: dict[str, Any], *, model_name: str, num_classes: int, path: str | Path = "checkpoint"
) -> None:
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
