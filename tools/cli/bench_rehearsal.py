"""`tagstream bench rehearsal`: the click command over tagstream.tools.bench.rehearsal."""

from __future__ import annotations

import shlex

import click

from tagstream.tools.bench.rehearsal import RehearsalFailed, parse_stages, run_rehearsal
from tagstream.tools.bench.rehearsal_steps import STAGES


@click.command("rehearsal")
@click.argument("workdir", type=click.Path(file_okay=False))
@click.option("--images", default=1_000_000, show_default=True, type=click.IntRange(min=10), help="Training images N.")
@click.option(
    "--eval-images", default=10_000, show_default=True, type=click.IntRange(min=10), help="Evaluation images."
)
@click.option("--parts", default=8, show_default=True, type=click.IntRange(min=1), help="convert --engine ray --parts.")
@click.option(
    "--stages",
    default="all",
    show_default=True,
    help=f"Comma-separated stages to run, in pipeline order: {', '.join(STAGES)}; earlier ones must be done.",
)
@click.option(
    "--redo",
    default="",
    help="Comma-separated stages to run again although they are done (after a fix); their earlier figures stay "
    "in rehearsal.json and rehearsal.md beside the new ones.",
)
@click.option(
    "--train-steps", default=300, show_default=True, type=click.IntRange(min=6), help="Steps of the 2-rank train."
)
@click.option(
    "--s3-steps", default=30, show_default=True, type=click.IntRange(min=1), help="Steps of the train from s3://."
)
@click.option("--workers", type=click.IntRange(min=1), help="Processes making the inputs [default: one per core].")
@click.option("--seed", default=0, show_default=True, type=int)
def bench_rehearsal(workdir, images, eval_images, parts, stages, redo, train_steps, s3_steps, workers, seed):
    """Run every stage a user runs on N real JPEGs, each as a child process through the real CLI, and record
    wall time, CPU time (user + sys of the whole process tree), peak RSS and the disk of WORKDIR after each step
    in WORKDIR/rehearsal.json and rehearsal.md, beside docs/scale.md's per-image predictions.

    \b
    Stages: inputs (N photo-like JPEGs with hashtags as img2dataset tars, an evaluation set with near copies
    planted in the training tars, a labelled split), convert (--engine ray, merge, verify, inspect --plot),
    vocab (synonyms, WordNet, stoplist; inspect --sampling sqrt), dedup (hash; recall of the planted copies),
    train (tiny-cpu under torchrun on 2 ranks with sqrt sampling and the dedup mask, rank 1 SIGKILLed
    mid-epoch, --resume on 1 rank; first-batch times cold and warm), embed (the whole dataset and the
    evaluation set; dedup --method both on them), s3 (push to a local moto server, a short train from s3://
    with a rank-local cache), transfer (linear probe and low-shot). Rerun the same command after an
    interruption: finished steps are skipped (--redo STAGES runs them again).

    \b
    Example:
      tagstream bench rehearsal /data/rehearsal --images 1000000 --parts 16
      tagstream bench rehearsal /tmp/r --images 2000 --eval-images 200 --train-steps 30 --s3-steps 6
    """
    try:
        chosen = parse_stages(stages)
        run_rehearsal(
            workdir,
            images=images,
            eval_images=eval_images,
            parts=parts,
            stages=chosen,
            redo=parse_stages(redo) if redo.strip() else (),
            train_steps=train_steps,
            s3_steps=s3_steps,
            seed=seed,
            workers=workers,
            command=shlex.join(
                ["tagstream", "bench", "rehearsal", str(workdir), "--images", str(images), "--eval-images"]
                + [str(eval_images), "--parts", str(parts), "--stages", stages, "--train-steps", str(train_steps)]
                + ["--s3-steps", str(s3_steps), "--seed", str(seed)]
                + (["--redo", redo] if redo.strip() else [])
            ),
            echo=click.echo,
        )
    except (ValueError, RehearsalFailed) as exc:
        raise click.ClickException(str(exc)) from None
