"""Every number of the train config has a range, checked before anything starts.

A non-finite float (nan, inf) anywhere is refused: `--base-lr nan` trained to weights that were 97 % NaN. The data
section's numbers are checked by `loader.config.check_data_settings` (shared with LoaderConfig); the rest are in
RANGES, one table, so a new key gets its bound where the others are. Bounds are generous: they catch typos and
hostile overrides (run.threads=100000 ran out of memory), not unusual runs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tagstream.loader import MAX_SEED, MAX_THREADS, check_int
from tagstream.loader.pipeline import MAX_EPOCH

MAX_STEPS = 1 << 40
MAX_BATCH = 1 << 24

# key -> (lowest, highest) allowed, both included; ints stay ints, floats are checked as numbers
RANGES: dict[str, tuple[float, float]] = {
    "optim.base_lr": (0.0, 1e3),
    "optim.base_batch_size": (1, MAX_BATCH),
    "optim.weight_decay": (0.0, 1e3),
    "optim.grad_clip": (0.0, 1e12),
    "optim.eps": (0.0, 1.0),
    "schedule.warmup_epochs": (0.0, MAX_EPOCH),
    "schedule.warmup_steps": (0, MAX_STEPS),
    "schedule.gamma": (0.0, 1e6),
    "batch.global_size": (1, MAX_BATCH),
    "batch.grad_accum": (1, MAX_BATCH),
    "run.epochs": (1, MAX_EPOCH),
    "run.steps": (1, MAX_STEPS),
    "run.checkpoint_every": (0, MAX_STEPS),
    "run.eval_every": (0, MAX_STEPS),
    "run.log_every": (1, MAX_STEPS),
    "run.keep_last": (1, 10_000),
    "run.seed": (0, MAX_SEED),
    "run.threads": (1, MAX_THREADS),
}


def check_ranges(sections: dict[str, Any]) -> None:
    """ValueError naming the first key of `sections` (name -> section dataclass) whose number is non-finite or
    outside RANGES."""
    for name, section in sections.items():
        for f in dataclasses.fields(section):
            key, value = f"{name}.{f.name}", getattr(section, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ValueError(f"{key}={value!r} must be a finite number")
            if key not in RANGES or value is None:
                continue
            lo, hi = RANGES[key]
            if isinstance(lo, int):
                check_int(key, value, lo, hi)
            elif not lo <= value <= hi:
                raise ValueError(f"{key}={value!r} must be in [{lo:g}, {hi:g}]")
