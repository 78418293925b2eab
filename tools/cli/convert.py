"""`tagstream convert SRC OUT`: the click command over tagstream.tools.convert.engine.convert."""

from __future__ import annotations

import click
from tagstream.tools.convert.image import ImageOptions
from tagstream.tools.convert.launch import ENGINES
from tagstream.tools.convert.parts import MAX_PARTS
from tagstream.tools.convert.sources import FORMATS


@click.command()
@click.argument("src", type=click.Path(exists=True))
@click.argument("out", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
              help="Input kind; auto: a directory is an ImageFolder, *.jsonl JSON lines, *.csv/*.tsv a table.")
@click.option("--shard-size", type=click.IntRange(min=1), default=10_000, show_default=True, help="Images per LMDB shard.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Decoding processes.")
@click.option("--min-side", type=click.IntRange(min=1), default=ImageOptions.min_side, show_default=True,
              help="Reject images whose shorter side is below this.")
@click.option("--max-side", type=click.IntRange(min=1), default=ImageOptions.max_side, show_default=True,
              help="Downscale (and re-encode) images whose longer side exceeds this.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=ImageOptions.max_pixels, show_default=True,
              help="Reject images with more pixels (decompression bombs).")
@click.option("--max-file-bytes", type=click.IntRange(min=1), default=ImageOptions.max_file_bytes, show_default=True,
              help="Reject image files larger than this.")
@click.option("--quality", type=click.IntRange(1, 100), default=ImageOptions.quality, show_default=True,
              help="JPEG quality of re-encoded images.")
@click.option("--image-column", default="image", show_default=True, help="CSV/TSV: column with the image path.")
@click.option("--tags-column", default="tags", show_default=True, help="CSV/TSV: column with the tags.")
@click.option("--caption-column", default="caption", show_default=True, help="CSV/TSV: column with a caption (#hashtags).")
@click.option("--id-column", default="id", show_default=True, help="CSV/TSV: column with the source id.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar with images/s.")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="local: this machine; ray: one Ray task per part on a cluster (OUT on storage every node sees).")
@click.option("--parts", type=click.IntRange(1, MAX_PARTS), default=None,
              help="Ray: cut the inputs into this many parts (default: the recorded N, else 4 per cluster CPU).")
@click.option("--address", default=None, help="Ray: the cluster to join (default: RAY_ADDRESS, else a local one).")
@click.option("--part", "part", default=None, metavar="I/N",
              help="Convert only part I of N (0 <= I < N) into OUT/parts/; `tagstream merge OUT` joins the N parts.")
def convert(src, out, fmt, shard_size, workers, min_side, max_side, max_pixels, max_file_bytes, quality,
            image_column, tags_column, caption_column, id_column, progress, engine, parts, address, part):
    """Convert images with hashtags in SRC into the dataset directory OUT (LMDB shards + NumPy index).

    SRC is an ImageFolder tree (SRC/<tag>/<image>), a JSON-lines file
    ({"image": "a.jpg", "tags": ["#beach"]} or {"image": ..., "caption": "... #beach"}) or a CSV/TSV
    file with image and tags columns. Bad inputs go to OUT/rejects.jsonl with a reason. Rerunning the
    same command after an interruption resumes and gives the identical dataset.

    On a cluster, the inputs are cut into N parts by input position: `--engine ray` runs each part as a
    Ray task and merges; `--part I/N` converts one part for any other scheduler, `tagstream merge OUT` joins
    them. Either way the dataset holds the records a one-process conversion holds, in the same order.

    \b
    Example:
      tagstream convert demo-src/hashtags.jsonl ds --workers 2 --shard-size 5000
      tagstream convert photos.jsonl /shared/ds --engine ray --address auto --parts 64
      tagstream convert photos.jsonl /shared/ds --part 3/64   # e.g. SLURM_ARRAY_TASK_ID=3, then merge
    """
    from tagstream.tools.convert.engine import ConvertRefused
    from tagstream.tools.convert.launch import run_conversion
    from tagstream.tools.convert.parts import PartSummary

    try:
        summary = run_conversion(
            src, out, engine=engine, part=part, parts=parts, address=address,
            format=fmt, shard_size=shard_size, workers=workers,
            image_options=ImageOptions(min_side=min_side, max_side=max_side, max_pixels=max_pixels,
                                       max_file_bytes=max_file_bytes, quality=quality),
            image_column=image_column, tags_column=tags_column, caption_column=caption_column,
            id_column=id_column, progress=progress,
        )
    except (ConvertRefused, ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    if isinstance(summary, PartSummary):
        done = "was already committed: nothing changed" if summary.already_complete else "committed"
        click.echo(f"part {summary.part} (inputs {summary.input_start}..{summary.input_stop - 1}) {done}")
        click.echo(f"images    {summary.images} in {summary.shards} shards, rejected {summary.rejected}")
        if summary.processed:
            click.echo(f"speed     {summary.processed / summary.seconds:.1f} inputs/s ({summary.processed} in {summary.seconds:.1f} s)")
        return
    if summary.already_complete:
        click.echo(f"{summary.out} is already a complete conversion of {src}: nothing to do, nothing changed")
    elif summary.resumed_from:
        click.echo(f"resumed after {summary.resumed_from} of {summary.inputs} inputs converted by an earlier run")
    click.echo(f"images    {summary.images} in {summary.shards} shards, {summary.bytes / 2**20:.1f} MiB")
    click.echo(f"tags      {summary.tags}")
    rejected = sum(summary.rejected.values())
    click.echo(f"rejected  {rejected}" + "".join(f"\n  {k:<20} {v}" for k, v in summary.rejected.items()))
    reencoded = summary.reencoded.get("images", 0)
    kinds = "".join(f"\n  {k:<20} {v}" for k, v in summary.reencoded.items() if k != "images")
    click.echo(f"re-encoded {reencoded}{kinds}")
    if summary.processed:
        click.echo(f"speed     {summary.inputs_per_s:.1f} inputs/s ({summary.processed} in {summary.seconds:.1f} s)")
