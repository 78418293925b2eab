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
from collections.abc import Callable
from pathlib import Path

from tagstream.tools.bench.rehearsal_context import (
    BUCKET,
    MASK,
    MASK_BOTH,
    VOCAB,
    WORDNET,
    Context,
    Step,
    command,
    tagstream,
)
from tagstream.tools.bench.rehearsal_inputs import make_inputs, paths
from tagstream.tools.bench.rehearsal_measure import run_forked
from tagstream.tools.bench.rehearsal_train import final_checkpoint, run_killed_train, set_aside, train_args, train_done


def _manifest(ctx: Context, name: str) -> bool:
    return ctx.path(name, "manifest.json").is_file()


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
            command(
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
        Step("convert", "merge", command("merge", lambda ctx: tagstream("merge", ds(ctx))), None, samples),
        Step(
            "convert",
            "convert eval",
            command(
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
                command(f"convert-down-{split}", _downstream(split)),
                lambda ctx, split=split: _manifest(ctx, f"down-{split}"),
                lambda ctx, split=split: _count_files(paths(ctx.workdir)["downstream"] / split),
            )
            for split in ("train", "eval")
        ),
        Step("convert", "verify", command("verify", lambda ctx: tagstream("verify", ds(ctx))), None, samples),
        Step(
            "convert",
            "inspect --plot",
            command(
                "inspect", lambda ctx: tagstream("inspect", ds(ctx), "--plot", str(ctx.path("reports", "tags.png")))
            ),
            lambda ctx: ctx.path("reports", "tags.png").is_file(),
            samples,
        ),
        Step(
            "vocab",
            "vocab",
            command("vocab", _vocab_args),
            lambda ctx: ctx.path("ds", "vocab", VOCAB, "vocab.json").is_file(),
            samples,
        ),
        Step(
            "vocab",
            "vocab eval (labels for its loader)",
            command("vocab-eval", lambda ctx: tagstream("vocab", str(ctx.path("eval")), "--name", "all", "--force")),
            lambda ctx: ctx.path("eval", "vocab", "all", "vocab.json").is_file(),
            evals,
        ),
        Step(
            "vocab",
            "inspect --vocab --sampling sqrt",
            command(
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
            command(
                "dedup",
                lambda ctx: tagstream("dedup", ds(ctx), "--against", str(ctx.path("eval")), "--name", MASK, "--json"),
            ),
            lambda ctx: ctx.path("ds", "masks", f"{MASK}.summary.json").is_file(),
            samples,
        ),
        Step(
            "train",
            "train 2 ranks, rank 1 killed",
            run_killed_train,
            train_done,
            trained,
            expect_failure=True,
            set_aside=set_aside("runs/main"),
        ),
        Step(
            "train",
            "train --resume on 1 rank",
            command(
                "train-resume",
                lambda ctx: tagstream(*train_args(ctx, ds(ctx), ctx.path("runs", "main"), ctx.train_steps)),
            ),
            train_done,
            trained,
        ),
        *(
            Step(
                "embed",
                f"embed {name}",
                command(
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
            command(
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
        Step("s3", "push", command("push", lambda ctx: tagstream("push", ds(ctx), f"s3://{BUCKET}/ds")), None, samples),
        Step(
            "s3",
            "train from s3:// (rank-local cache)",
            command(
                "train-s3",
                lambda ctx: tagstream(
                    *train_args(
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
            set_aside=set_aside("runs/s3", "s3-cache"),
        ),
        Step(
            "transfer",
            "transfer linear + low-shot",
            command(
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
            set_aside=set_aside("reports/transfer.json"),
        ),
    ]


STAGES = ("inputs", "convert", "vocab", "dedup", "train", "embed", "s3", "transfer")
