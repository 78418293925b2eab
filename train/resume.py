"""What `--resume` may change: a resumed run must train the model it checkpointed on the same data with the same
optimisation, so every other difference between the checkpoint's config and the new one is refused, naming each,
unless the user names the key in `--resume-anyway KEY` (an explicit, recorded override)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from tagstream.train.config import SECTIONS, TrainConfig

# keys that change how long or how visibly a run goes, or how it is spread over processes — not what it computes
MAY_CHANGE = frozenset(
    {
        "run.steps",
        "run.epochs",
        "run.log_every",
        "run.checkpoint_every",
        "run.keep_last",
        "run.eval_every",
        "run.out_dir",
        "run.threads",
        "run.progress",
        "run.device",
        "run.channels_last",
        "data.workers",
        "data.threads",
        "data.prefetch",
        "data.cache_dir",
        "data.cache_limit",
        "data.verify_shards",
        "data.storage_timeout",
        "data.holdout_max_images",
        "batch.grad_accum",
    }
)


PATHS = frozenset({"data.dataset"})  # the same dataset may be spelled differently (relative, absolute, ./, a link)


def same_place(old: object, new: object) -> bool:
    """Do two spellings of a dataset name the same place? Local paths are compared resolved (a relative one
    against the current directory), URLs as written (a trailing / aside)."""
    from tagstream.loader.data import storage

    if not isinstance(old, str) or not isinstance(new, str):
        return old == new
    a, b = storage.local_path(old), storage.local_path(new)
    if a is None or b is None:
        return old.rstrip("/") == new.rstrip("/")
    return a.resolve() == b.resolve()


def differences(old: dict, new: dict) -> dict[str, tuple[object, object]]:
    """section.key -> (old value, new value) for every key that differs between two config dicts."""
    out = {}
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        if not isinstance(a, dict) or not isinstance(b, dict):
            if a != b:
                out[section] = (a, b)
            continue
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out[f"{section}.{key}"] = (a.get(key), b.get(key))
    return out


def with_defaults(saved: dict) -> dict:
    """A checkpoint's config dict with every key added to tagstream since it was written set to that key's
    default (each new key's default is the behaviour before it existed: SGD, no label smoothing, no clipping, one
    partition per rank), so a checkpoint of an earlier version resumes instead of showing them as changes. One
    exception: data.holdout_max_images (default 50,000; before it, the whole split) bounds only the evaluation, and
    is in MAY_CHANGE."""
    out = {name: dict(section) if isinstance(section, dict) else section for name, section in saved.items()}
    for name, cls in SECTIONS.items():
        section = out.setdefault(name, {})
        if not isinstance(section, dict):
            continue
        for f in dataclasses.fields(cls):
            if f.name not in section and f.default is not dataclasses.MISSING:
                section[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
    return out


def check_resume(saved: dict, config: TrainConfig, *, path: str | Path, allow: Sequence[str] = ()) -> None:
    """Refuse to resume checkpoint `path` (its config dict `saved`) under `config` when anything but MAY_CHANGE
    and the keys in `allow` differs; the message lists each difference as key: old -> new."""
    known = set(differences({}, config.to_dict()))
    unknown = sorted(set(allow) - known)
    if unknown:
        raise ValueError(f"--resume-anyway {', '.join(unknown)}: not a config key (keys look like data.sampling)")
    refused = {
        k: v
        for k, v in differences(with_defaults(saved), config.to_dict()).items()
        if k not in MAY_CHANGE and k not in allow and not (k in PATHS and same_place(*v))
    }
    if refused:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise ValueError(
            f"{path} was trained with another config ({listed}); resume with the same settings, start a new "
            "run.out_dir, or accept each change with --resume-anyway KEY"
        )


def fresh_hyperparameters(optimizer) -> list[dict]:
    """The hyperparameters (everything but the parameters) of a freshly built optimizer's groups."""
    return [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


def reapply_hyperparameters(optimizer, scheduler, fresh: list[dict]) -> None:
    """After loading a checkpoint's optimizer and schedule state, make this run's config govern again: the loaded
    state carries the checkpoint's LR, weight decay and momentum, which only differ when the user accepted a change
    (--resume-anyway optim.base_lr, ...). The current LR is recomputed from the schedule at the resumed step."""
    if len(fresh) != len(optimizer.param_groups):
        raise ValueError(
            f"the checkpoint's optimizer has {len(optimizer.param_groups)} parameter groups, this run {len(fresh)}"
        )
    for group, hyper in zip(optimizer.param_groups, fresh):
        group.update({k: v for k, v in hyper.items() if k != "lr"})
        group["initial_lr"] = hyper.get("initial_lr", hyper["lr"])
    scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    for group, base, fn in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(scheduler.last_epoch)
