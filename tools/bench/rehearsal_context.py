"""What every rehearsal step shares: the work folder and settings (`Context`), a step's contract (`Step`), the
user's command line (`tagstream`), and a measured run of one command."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tagstream.tools.bench.rehearsal_inputs import InputsSpec
from tagstream.tools.bench.rehearsal_measure import Measured, run_measured

WORDNET = "/usr/share/wordnet"
BUCKET = "rehearsal"
VOCAB, MASK, MASK_BOTH = "v1", "no-eval", "no-eval-both"


@dataclass
class Context:
    """Everything a step needs: the work folder, the settings, the environment of its children."""

    workdir: Path
    spec: InputsSpec
    parts: int
    train_steps: int
    s3_steps: int
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    keep: set[int] = field(default_factory=set)  # processes of ours that outlive steps (the S3 server)
    facts: dict = field(default_factory=dict)  # what steps observed (the kill, the server), for the results

    def path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)

    @property
    def samples(self) -> int:
        return self.spec.images + self.spec.planted

    def log(self, step: str) -> Path:
        return self.path("logs", f"{step}.log")


@dataclass(frozen=True)
class Step:
    stage: str
    name: str
    run: Callable[[Context], Measured]
    complete: Callable[[Context], bool] | None  # its output is whole (None: its record says so): skipped on a rerun
    images: Callable[[Context], int]
    expect_failure: bool = False  # the killed torchrun job
    # before a done step runs again (--redo): move its earlier output aside (renamed, never deleted)
    set_aside: Callable[[Context], None] | None = None


def tagstream(*args: str) -> list[str]:
    """The user's command: the `tagstream` script beside this Python, else `python -m tagstream.tools.cli`."""
    script = Path(sys.executable).with_name("tagstream")
    return [str(script), *args] if script.is_file() else [sys.executable, "-m", "tagstream.tools.cli", *args]


def command(name: str, argv: Callable[[Context], list[str]], **kw) -> Callable[[Context], Measured]:
    def run(ctx: Context) -> Measured:
        return run_measured(argv(ctx), log=ctx.log(name), env=ctx.env, keep=ctx.keep, **kw)

    return run
