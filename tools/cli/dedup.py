"""`tagstream dedup`: mask the training images that are near or exact copies of evaluation images."""

from __future__ import annotations

import json

import click
from tagstream.kernels.dedup import MAX_DISTANCE
from tagstream.loader.format import FormatError
from tagstream.tools.dedup.run import DEFAULT_MAX_DISTANCE, run_dedup


def format_summary(s: dict) -> str:
    lines = [
        f"{s['train']}: {s['excluded']:,} of {s['train_images']:,} images excluded "
        f"({100 * s['excluded_fraction']:.3f}%), pHash distance <= {s['max_distance']}"
        f"{', same bytes checked' if s['exact_bytes_checked'] else ''}{', mirrors too' if s['mirrors'] else ''}"
    ]
    for e in s["against"]:
        lines.append(
            f"  vs {e['label']} ({e['images']:,} images): {e['pairs']:,} pairs ({e['exact_pairs']:,} same bytes, "
            f"{e['mirrored_pairs']:,} mirrored), "
            f"{e['train_matched']:,} train / {e['eval_matched']:,} eval images matched; {e['method']}"
        )
    lines.append(f"mask {s['mask']}\npairs {s['pairs_file']}")
    if "grid" in s:
        lines.append(f"grid {s['grid']['path']} ({s['grid']['pairs_shown']} pairs)")
    lines.append(f"{s['seconds']:.2f} s")
    return "\n".join(lines)


@click.command()
@click.argument("train", type=click.Path(exists=True, file_okay=False))
@click.option("--against", "against", multiple=True, required=True, type=click.Path(exists=True, file_okay=False),
              help="An evaluation dataset (repeat for several).")
@click.option("--name", required=True, help="Mask name: writes TRAIN/masks/NAME.npy, NAME.pairs.tsv, NAME.summary.json.")
@click.option("--max-distance", default=DEFAULT_MAX_DISTANCE, show_default=True, type=click.IntRange(0, MAX_DISTANCE),
              help="Largest perceptual-hash Hamming distance (of 64 bits) that counts as a copy.")
@click.option("--exact/--no-exact", default=True, show_default=True,
              help="Also match identical stored image bytes (reads every record once).")
@click.option("--mirrors", is_flag=True,
              help="Also match copies flipped left-right (hashes each evaluation image mirrored: decodes it once).")
@click.option("--grid", type=click.Path(dir_okay=False), help="Draw a sample of matched pairs side by side into this PNG.")
@click.option("--grid-pairs", default=16, show_default=True, type=click.IntRange(min=1), help="Pairs drawn in the grid.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the grid's sample.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def dedup(train, against, name, max_distance, exact, mirrors, grid, grid_pairs, seed, as_json) -> None:
    """Find every TRAIN image within --max-distance (perceptual hash) of, or byte-identical to, an image of
    an --against dataset, and write the mask TRAIN/masks/NAME.npy (True = excluded; no data is deleted),
    the matched pairs and a summary. Train with data.masks = [NAME] to never draw a masked image.

    The default distance was chosen with `tagstream bench dedup`.

    \b
    Example:
      tagstream dedup ds --against imagenet-val --against places-val --name eval-copies --grid pairs.png
      tagstream dedup ds --against imagenet-val --name eval-copies --mirrors --max-distance 8
      tagstream train --config resnet50 --dataset ds --vocab v1 --set data.masks=eval-copies
    """
    try:
        summary = run_dedup(train, against, name=name, max_distance=max_distance, exact=exact, mirrors=mirrors,
                            grid=grid, grid_pairs=grid_pairs, seed=seed)
    except (ValueError, FormatError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))
