"""The rehearsal's steps: each a command a user runs (`tagstream ...`, `torchrun ... -m tagstream.tools.cli train`),
run as a child process and measured, with the check that its output is complete (a complete step is skipped
when the rehearsal runs again) and the number of images it handles (for the per-image rate).

Stages, in order: inputs (stage 1, the only one run in-process: a forked child), convert, vocab, dedup, train
(2 ranks under torchrun, one SIGKILLed mid-epoch, resumed on 1 rank), embed (the whole dataset and the evaluation
set, then dedup --method both on those features), s3 (push to a local moto server, a short train from s3://
with a rank-local cache), transfer (linear probe and low-shot on the labelled split).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tagstream.tools.bench.rehearsal_inputs import InputsSpec, make_inputs, paths
from tagstream.tools.bench.rehearsal_measure import Measured, descendants, run_forked, run_measured

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


def tagstream(*args: str) -> list[str]:
    """The user's command: the `tagstream` script beside this Python, else `python -m tagstream.tools.cli`."""
    script = Path(sys.executable).with_name("tagstream")
    return [str(script), *args] if script.is_file() else [sys.executable, "-m", "tagstream.tools.cli", *args]


def _command(name: str, argv: Callable[[Context], list[str]], **kw) -> Callable[[Context], Measured]:
    def run(ctx: Context) -> Measured:
        return run_measured(argv(ctx), log=ctx.log(name), env=ctx.env, keep=ctx.keep, **kw)

    return run


def _manifest(ctx: Context, name: str) -> bool:
    return ctx.path(name, "manifest.json").is_file()


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("step-*.pt"))


def _train_args(ctx: Context, dataset: str, out: Path, steps: int, *extra: str) -> list[str]:
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
        *extra,
    ]


def _last_step(run_dir: Path) -> int:
    """The newest optimizer step metrics.jsonl records (0 before any)."""
    step = 0
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            if record.get("kind") == "train":
                step = max(step, int(record["step"]))
    return step


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
    """watch(proc): once the run has written a checkpoint and stepped past it, SIGKILL rank 1 (once)."""

    def watch(proc) -> None:
        if "killed_at_step" in ctx.facts:
            return
        saved = checkpoints(run_dir)
        if not saved:
            return
        at = _last_step(run_dir)
        if at <= int(saved[0].stem.split("-")[1]):
            return
        for pid in _rank_pids(proc.pid, 1):
            os.kill(pid, signal.SIGKILL)
            ctx.facts.update(killed_at_step=at, killed_pid=pid)

    return watch


def _run_killed_train(ctx: Context) -> Measured:
    out = ctx.path("runs", "main")
    ctx.facts.pop("killed_at_step", None)
    argv = [
        shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "tagstream.tools.cli",
        *_train_args(ctx, str(ctx.path("ds")), out, ctx.train_steps),
    ]
    return run_measured(argv, log=ctx.log("train-2-ranks"), env=ctx.env, keep=ctx.keep, watch=_killer(ctx, out))


def _train_done(ctx: Context) -> bool:
    return any(p.stem == f"step-{ctx.train_steps:09d}" for p in checkpoints(ctx.path("runs", "main")))


def final_checkpoint(ctx: Context) -> str:
    saved = checkpoints(ctx.path("runs", "main"))
    if not saved:
        raise ValueError(f"{ctx.path('runs', 'main')}: no checkpoint; run the train stage first")
    return str(saved[-1])


def _downstream(split: str) -> Callable[[Context], list[str]]:
    return lambda ctx: tagstream(
        "convert",
        str(paths(ctx.workdir)["downstream"] / split),
        str(ctx.path(f"down-{split}")),
        "--format",
        "imagefolder",
        "--no-progress",
    )


def _count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*.jpg"))


def _vocab_args(ctx: Context) -> list[str]:
    root = paths(ctx.workdir)["root"]
    args = ["vocab", str(ctx.path("ds")), "--name", VOCAB, "--synonyms", str(root / "synonyms.tsv")]
    if (Path(WORDNET) / "index.noun").is_file():
        args += ["--wordnet", WORDNET]
    return tagstream(*args, "--stoplist", str(root / "stoplist.txt"), "--min-count", "5", "--top", "17000", "--force")


def steps() -> list[Step]:
    """Every step of the rehearsal, in order."""
    ds = lambda ctx: str(ctx.path("ds"))  # noqa: E731
    samples = lambda ctx: ctx.samples  # noqa: E731
    evals = lambda ctx: ctx.spec.eval_images  # noqa: E731
    trained = lambda ctx: ctx.train_steps * 64  # noqa: E731  (tiny-cpu's global batch)
    emb = lambda ctx, name: str(ctx.path("emb", f"{name}.npy"))  # noqa: E731
    return [
        Step(
            "inputs",
            "make inputs",
            lambda ctx: run_forked(lambda: make_inputs(ctx.workdir, ctx.spec), log=ctx.log("inputs"), keep=ctx.keep),
            lambda ctx: paths(ctx.workdir)["done"].is_file(),
            samples,
        ),
        Step(
            "convert",
            "convert --engine ray",
            _command(
                "convert",
                lambda ctx: tagstream(
                    "convert",
                    str(paths(ctx.workdir)["train"]),
                    ds(ctx),
                    "--format",
                    "tar",
                    "--engine",
                    "ray",
                    "--parts",
                    str(ctx.parts),
                    "--no-progress",
                ),
            ),
            lambda ctx: _manifest(ctx, "ds"),
            samples,
        ),
        Step("convert", "merge", _command("merge", lambda ctx: tagstream("merge", ds(ctx))), None, samples),
        Step(
            "convert",
            "convert eval",
            _command(
                "convert-eval",
                lambda ctx: tagstream(
                    "convert",
                    str(paths(ctx.workdir)["eval"]),
                    str(ctx.path("eval")),
                    "--format",
                    "tar",
                    "--no-progress",
                ),
            ),
            lambda ctx: _manifest(ctx, "eval"),
            evals,
        ),
        *(
            Step(
                "convert",
                f"convert downstream {split}",
                _command(f"convert-down-{split}", _downstream(split)),
                lambda ctx, split=split: _manifest(ctx, f"down-{split}"),
                lambda ctx, split=split: _count_files(paths(ctx.workdir)["downstream"] / split),
            )
            for split in ("train", "eval")
        ),
        Step("convert", "verify", _command("verify", lambda ctx: tagstream("verify", ds(ctx))), None, samples),
        Step(
            "convert",
            "inspect --plot",
            _command(
                "inspect", lambda ctx: tagstream("inspect", ds(ctx), "--plot", str(ctx.path("reports", "tags.png")))
            ),
            lambda ctx: ctx.path("reports", "tags.png").is_file(),
            samples,
        ),
        Step(
            "vocab",
            "vocab",
            _command("vocab", _vocab_args),
            lambda ctx: ctx.path("ds", "vocab", VOCAB, "vocab.json").is_file(),
            samples,
        ),
        Step(
            "vocab",
            "vocab eval (labels for its loader)",
            _command("vocab-eval", lambda ctx: tagstream("vocab", str(ctx.path("eval")), "--name", "all", "--force")),
            lambda ctx: ctx.path("eval", "vocab", "all", "vocab.json").is_file(),
            evals,
        ),
        Step(
            "vocab",
            "inspect --vocab --sampling sqrt",
            _command(
                "inspect-vocab",
                lambda ctx: tagstream(
                    "inspect",
                    ds(ctx),
                    "--vocab",
                    VOCAB,
                    "--sampling",
                    "sqrt",
                    "--plot",
                    str(ctx.path("reports", "sampling.png")),
                ),
            ),
            lambda ctx: ctx.path("reports", "sampling.png").is_file(),
            samples,
        ),
        Step(
            "dedup",
            "dedup --method hash",
            _command(
                "dedup",
                lambda ctx: tagstream("dedup", ds(ctx), "--against", str(ctx.path("eval")), "--name", MASK, "--json"),
            ),
            lambda ctx: ctx.path("ds", "masks", f"{MASK}.summary.json").is_file(),
            samples,
        ),
        Step("train", "train 2 ranks, rank 1 killed", _run_killed_train, _train_done, trained, expect_failure=True),
        Step(
            "train",
            "train --resume on 1 rank",
            _command(
                "train-resume",
                lambda ctx: tagstream(
                    *_train_args(ctx, ds(ctx), ctx.path("runs", "main"), ctx.train_steps), "--resume"
                ),
            ),
            _train_done,
            trained,
        ),
        *(
            Step(
                "embed",
                f"embed {name}",
                _command(
                    f"embed-{name}",
                    lambda ctx, name=name: tagstream(
                        "embed",
                        "--checkpoint",
                        final_checkpoint(ctx),
                        "--data",
                        str(ctx.path(name)),
                        "--out",
                        emb(ctx, name),
                        "--content-box",
                        "--device",
                        "cpu",
                    ),
                ),
                lambda ctx, name=name: Path(emb(ctx, name)).is_file(),
                count,
            )
            for name, count in (("ds", samples), ("eval", evals))
        ),
        Step(
            "embed",
            "dedup --method both",
            _command(
                "dedup-both",
                lambda ctx: tagstream(
                    "dedup",
                    ds(ctx),
                    "--against",
                    str(ctx.path("eval")),
                    "--name",
                    MASK_BOTH,
                    "--method",
                    "both",
                    "--features",
                    emb(ctx, "ds"),
                    "--against-features",
                    emb(ctx, "eval"),
                    "--json",
                ),
            ),
            lambda ctx: ctx.path("ds", "masks", f"{MASK_BOTH}.summary.json").is_file(),
            samples,
        ),
        Step(
            "s3", "push", _command("push", lambda ctx: tagstream("push", ds(ctx), f"s3://{BUCKET}/ds")), None, samples
        ),
        Step(
            "s3",
            "train from s3:// (rank-local cache)",
            _command(
                "train-s3",
                lambda ctx: tagstream(
                    *_train_args(
                        ctx,
                        f"s3://{BUCKET}/ds",
                        ctx.path("runs", "s3"),
                        ctx.s3_steps,
                        "--set",
                        f"data.cache_dir={json.dumps(str(ctx.path('s3-cache')))}",
                    )
                ),
            ),
            None,
            lambda ctx: ctx.s3_steps * 64,
        ),
        Step(
            "transfer",
            "transfer linear + low-shot",
            _command(
                "transfer",
                lambda ctx: tagstream(
                    "transfer",
                    "--checkpoint",
                    final_checkpoint(ctx),
                    "--train",
                    str(ctx.path("down-train")),
                    "--eval",
                    str(ctx.path("down-eval")),
                    "--mode",
                    "linear",
                    "--shots",
                    ",".join(str(k) for k in (1, 5, 10, 25) if k <= ctx.spec.downstream_train),
                    "--device",
                    "cpu",
                    "--out",
                    str(ctx.path("reports", "transfer.json")),
                ),
            ),
            lambda ctx: ctx.path("reports", "transfer.json").is_file(),
            lambda ctx: ctx.spec.downstream_classes * (ctx.spec.downstream_train + ctx.spec.downstream_eval),
        ),
    ]


STAGES = ("inputs", "convert", "vocab", "dedup", "train", "embed", "s3", "transfer")
