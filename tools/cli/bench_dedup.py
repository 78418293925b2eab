"""`tagstream bench dedup`: the click command over tagstream.tools.bench.dedup."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tagstream.kernels import dedup as kdedup
from tagstream.tools.bench.dedup import format_speed, plot_quality, quality_summary, run_speed
from tagstream.tools.bench.dedup_embed import (
    calibration_summary,
    format_calibration,
    format_knn_speed,
    plot_calibration,
    run_knn_speed,
)
from tagstream.tools.dedup.hashing import DEFAULT_MAX_DISTANCE
from tagstream.tools.dedup.quality import measure, table


def _size(value: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 500x375") from None
    if w < 8 or h < 8:
        raise click.BadParameter(f"{value!r}: width and height must be >= 8")
    return w, h


def _distances(value: str) -> list[int]:
    try:
        ds = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if not ds or any(not 0 <= d <= kdedup.MAX_DISTANCE for d in ds):
        raise click.BadParameter(f"{value!r}: distances must be in 0..{kdedup.MAX_DISTANCE}")
    return ds


@click.command("dedup")
@click.option(
    "--method",
    type=click.Choice(["hash", "embed"]),
    default="hash",
    show_default=True,
    help="hash: the pHash alone (quality per distance, join speed); embed: hash and embedding side by side "
    "on one planted set, and the faiss join's speed.",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False),
    help="embed: the model (default: the newest checkpoint of `make demo` in demo-out/runs/sqrt/).",
)
@click.option(
    "--originals", default=200, show_default=True, type=click.IntRange(min=2), help="embed: planted originals."
)
@click.option(
    "--distractors",
    default=2000,
    show_default=True,
    type=click.IntRange(min=0),
    help="embed: distinct distractor images.",
)
@click.option(
    "--target-fpr",
    default=1e-4,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="embed: false-match rate (per distinct pair) the printed threshold and distance keep to.",
)
@click.option(
    "--mirrors/--no-mirrors", default=True, show_default=True, help="embed: hash side joins mirrored originals too."
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="embed: where the model runs.",
)
@click.option(
    "--dim", default=512, show_default=True, type=click.IntRange(min=1), help="embed: feature dimension (speed)."
)
@click.option(
    "--timed-queries",
    default=200_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="embed: training queries timed (speed); fewer than --train are extrapolated.",
)
@click.option(
    "--images",
    default=1000,
    show_default=True,
    type=click.IntRange(min=2),
    help="Distinct photo-like originals (quality).",
)
@click.option("--size", default="500x375", show_default=True, help="Their size, WIDTHxHEIGHT.")
@click.option(
    "--max-d", default=16, show_default=True, type=click.IntRange(0, 64), help="Largest distance in the quality table."
)
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the recall / false-match plot to this PNG.")
@click.option(
    "--train",
    "n_train",
    default=10_000_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Training hashes (speed).",
)
@click.option(
    "--eval",
    "n_eval",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Evaluation hashes (speed).",
)
@click.option(
    "--distances", default=f"0,4,8,{DEFAULT_MAX_DISTANCE}", show_default=True, help="Distances timed (speed)."
)
@click.option(
    "--brute-queries",
    default=20_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Queries the all-pairs rate is measured on.",
)
@click.option("--quality/--no-quality", default=True, show_default=True, help="Run the quality part.")
@click.option("--speed/--no-speed", default=True, show_default=True, help="Run the speed part.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_dedup(
    method,
    checkpoint,
    originals,
    distractors,
    target_fpr,
    mirrors,
    device,
    dim,
    timed_queries,
    images,
    size,
    max_d,
    plot,
    n_train,
    n_eval,
    distances,
    brute_queries,
    quality,
    speed,
    seed,
    as_json,
):
    """Measure de-duplication. --method hash: recall of near copies (resize, JPEG, brightness, small crops,
    img2dataset's border padding at 256 and 224; larger crops, flips and padding hashed on the whole frame
    reported apart) and false-match rate among distinct images at each distance D,
    the D chosen from them; then the join's time on --train x --eval hashes with the all-pairs rate.
    --method embed: heavy edits (crops 10-40 %, rotation, colour jitter, overlays, JPEG q30, grey, flips)
    planted among distractors, recall per edit for the hash and the embedding at the same false-match
    rates, the threshold for --target-fpr (for `tagstream dedup --threshold`); then the faiss join's time
    on --train x --eval vectors against the exact join.

    \b
    Example:
      tagstream bench dedup --plot dedup-quality.png
      tagstream bench dedup --no-quality --train 10000000 --eval 100000 --distances 0,8,10
      tagstream bench dedup --method embed --checkpoint demo-out/runs/sqrt/step-000000600.pt --target-fpr 1e-5
    """
    if method == "embed":
        _bench_embed(
            checkpoint,
            originals,
            distractors,
            target_fpr,
            mirrors,
            device,
            dim,
            timed_queries,
            plot,
            n_train,
            n_eval,
            brute_queries,
            quality,
            speed,
            seed,
            as_json,
        )
        return
    size_wh = _size(size)
    ds = _distances(distances)
    result: dict = {}
    if quality:
        q = measure(images=images, size=size_wh, seed=seed)
        rng = range(min(max_d, q.hash_bits) + 1)
        result["quality"] = quality_summary(q, rng)
        if plot:
            plot_quality(Path(plot), q, rng)
            result["quality"]["plot"] = str(plot)
        if not as_json:
            d, met = q.choose_distance()
            click.echo(table(q, rng))
            click.echo(
                f"chosen D = {d}: target (recall >= 0.95 on every main edit, false-match rate <= 1e-4) "
                f"{'met' if met else 'NOT met'}; tagstream dedup's default is {DEFAULT_MAX_DISTANCE}"
            )
            if q.distinct.size < 30_000:
                click.echo(
                    f"note: {q.distinct.size:,} distinct pairs cannot show a rate of 1e-4 (>= 30,000 needed "
                    "for zero observed to bound it at 95%): use --images 250 or more"
                )
            click.echo("")
    if speed:
        result["speed"] = run_speed(
            n_train=n_train, n_eval=n_eval, distances=ds, brute_queries=brute_queries, seed=seed
        )
        if not as_json:
            click.echo(format_speed(result["speed"]))
    if as_json:
        click.echo(json.dumps(result, indent=2))


def _bench_embed(
    checkpoint,
    originals,
    distractors,
    target_fpr,
    mirrors,
    device,
    dim,
    timed_queries,
    plot,
    n_train,
    n_eval,
    brute_queries,
    quality,
    speed,
    seed,
    as_json,
) -> None:
    from tagstream.tools.dedup.calibrate import default_checkpoint, measure

    result: dict = {}
    try:
        if quality:
            c = measure(
                checkpoint or default_checkpoint(),
                originals=originals,
                distractors=distractors,
                mirrors=mirrors,
                seed=seed,
                device=device,
            )
            result["calibration"] = calibration_summary(c, target_fpr)
            if plot:
                plot_calibration(Path(plot), c)
                result["calibration"]["plot"] = str(plot)
            if not as_json:
                click.echo(format_calibration(result["calibration"]) + "\n")
        if speed:
            result["speed"] = run_knn_speed(
                n_train=n_train,
                n_eval=n_eval,
                dim=dim,
                timed_queries=timed_queries,
                brute_queries=brute_queries,
                seed=seed,
            )
            if not as_json:
                click.echo(format_knn_speed(result["speed"]))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result, indent=2))
