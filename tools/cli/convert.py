"""`tagstream convert SRC OUT`: the click command over tagstream.tools.convert.launch.run_conversion (here in one
process, one part of N, or every part on Ray)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from tagstream.tools.cli import SectionedCommand
from tagstream.tools.convert.image import ImageOptions
from tagstream.tools.convert.inputs import FORMATS, INPUT_KINDS
from tagstream.tools.convert.launch import ENGINES
from tagstream.tools.convert.parts import MAX_PARTS

# --help lists each input kind's options under its own heading (the flags are its options' field names)
_SECTIONS = {
    f"{kind.title} (--format {kind.name})": tuple(f.name for f in fields(kind.options_type))
    for kind in INPUT_KINDS.values()
}


@click.command(cls=SectionedCommand, sections=_SECTIONS)
@click.argument("src")
@click.argument("out", type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="Input kind; auto: *.tar (or a folder of them) WebDataset tars, *.parquet tables, *.jsonl JSON "
    "lines, *.csv/*.tsv a table, a folder with data/*.parquet or an hf://datasets/ URL a Hugging Face hub "
    "dataset, a save_to_disk folder, another folder an ImageFolder. YFCC100M needs --format yfcc.",
)
@click.option(
    "--shard-size", type=click.IntRange(min=1), default=10_000, show_default=True, help="Images per LMDB shard."
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Decoding processes.")
@click.option(
    "--min-side",
    type=click.IntRange(min=1),
    default=ImageOptions.min_side,
    show_default=True,
    help="Reject images whose shorter side is below this.",
)
@click.option(
    "--max-side",
    type=click.IntRange(min=1),
    default=ImageOptions.max_side,
    show_default=True,
    help="Downscale (and re-encode) images whose longer side exceeds this.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=ImageOptions.max_pixels,
    show_default=True,
    help="Reject images with more pixels (decompression bombs).",
)
@click.option(
    "--max-file-bytes",
    type=click.IntRange(min=1),
    default=ImageOptions.max_file_bytes,
    show_default=True,
    help="Reject image files larger than this.",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=ImageOptions.quality,
    show_default=True,
    help="JPEG quality of re-encoded images.",
)
@click.option(
    "--restart-interval",
    default=str(ImageOptions.restart_interval),
    show_default=True,
    metavar="{0,rows,N}",
    callback=lambda ctx, param, value: _restart_interval(value),
    help="Rewrite stored JPEGs losslessly (same pixels) with restart markers every ~N MCUs ('rows': every MCU "
    "row; 0: store the bytes as they are): the CPU loader then decodes only the intervals a crop covers.",
)
@click.option(
    "--image-column",
    default="image",
    show_default=True,
    help="Column with the image path or URL (Parquet: or the image bytes).",
)
@click.option("--tags-column", default="tags", show_default=True, help="Column with the tags.")
@click.option("--caption-column", default="caption", show_default=True, help="Column with a caption (#hashtags).")
@click.option("--id-column", default="id", show_default=True, help="Column with the source id.")
@click.option(
    "--tags-field",
    default="tags",
    show_default=True,
    help="Field of the JSON member with the tags (a list, or a comma/space separated string).",
)
@click.option(
    "--caption-field",
    default="caption",
    show_default=True,
    help="JSON field with a caption (#hashtags), used when a sample has no .txt member.",
)
@click.option(
    "--id-field",
    default="",
    help="Tars: JSON field with the source id [default: the sample key]; "
    "YFCC with tar images: the JSON field holding the photo id.",
)
@click.option(
    "--status-field",
    default="status",
    show_default=True,
    help="img2dataset's download status column or field; other values than 'success' are rejected ('' = none).",
)
@click.option(
    "--image-root",
    default="",
    help="Folder or URL that relative image paths in a table are resolved against [default: the table's folder].",
)
@click.option(
    "--split",
    default="train",
    show_default=True,
    help="The split to convert: files named for it (data/train-00000-of-00042.parquet) or a DatasetDict's folder.",
)
@click.option("--images", default="", help="A folder of images named by photo id, or img2dataset tars.")
@click.option("--yfcc-machine-tags", is_flag=True, help="Take the machine tags too, not only the user tags.")
@click.option(
    "--require-tags",
    is_flag=True,
    help="Exit 1 (the dataset kept) when no image has a tag or more than half have none, instead of warning.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar with images/s.")
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="local",
    show_default=True,
    help="local: this machine; ray: one Ray task per part on a cluster (OUT on storage every node sees).",
)
@click.option(
    "--parts",
    type=click.IntRange(1, MAX_PARTS),
    default=None,
    help="Cut the inputs into N parts. Ray: default the recorded N, else 4 per cluster CPU. Alone: scan "
    "once and record the plan that the `--part I/N` jobs then reuse.",
)
@click.option("--address", default=None, help="Ray: the cluster to join (default: RAY_ADDRESS, else a local one).")
@click.option(
    "--part",
    "part",
    default=None,
    metavar="I/N",
    help="Convert only part I of N (0 <= I < N) into OUT/parts/; `tagstream merge OUT` joins the N parts.",
)
def convert(
    src,
    out,
    fmt,
    shard_size,
    workers,
    min_side,
    max_side,
    max_pixels,
    max_file_bytes,
    quality,
    restart_interval,
    image_column,
    tags_column,
    caption_column,
    id_column,
    tags_field,
    caption_field,
    id_field,
    status_field,
    image_root,
    split,
    images,
    yfcc_machine_tags,
    require_tags,
    progress,
    engine,
    parts,
    address,
    part,
):
    """Convert images with hashtags in SRC into the dataset directory OUT (LMDB shards + NumPy index).

    SRC is an ImageFolder tree (SRC/<tag>/<image>); a JSON-lines file ({"image": "a.jpg", "tags":
    ["#beach"]} or {"image": ..., "caption": "... #beach"}); a CSV/TSV or Parquet table with image and
    tags columns (Parquet: also Hugging Face datasets' Image feature); a Hugging Face dataset as the hub lays it
    out (data/train-00000-of-00042.parquet, or hf://datasets/OWNER/NAME) or as save_to_disk writes it;
    WebDataset/img2dataset tar shards (a file, a folder, a glob or a brace pattern; tars
    are streamed, never unpacked); or YFCC100M's metadata file (--format yfcc, plain or .bz2) joined
    to its images. Any of these may be an s3://, gs://, https:// or file:// URL. Bad inputs go to
    OUT/rejects.jsonl with a reason. Rerunning the same command after an interruption (or a storage
    error) resumes and gives the identical dataset.

    On a cluster, the inputs are cut into N parts by input position: `--engine ray` runs each part as a
    Ray task and merges; `--part I/N` converts one part for any other scheduler, `tagstream merge OUT` joins
    them. Either way the dataset holds the records a one-process conversion holds, in the same order.

    \b
    Examples:
      tagstream convert demo-src/hashtags.jsonl ds --workers 2 --shard-size 5000
      tagstream convert photos/ ds                                   # ImageFolder
      tagstream convert table.csv ds --tags-column hashtags
      tagstream convert 'laion/{00000..00123}.tar' ds --tags-field tags   # img2dataset tars
      tagstream convert s3://bucket/shards/ ds --format tar --workers 8
      tagstream convert table.parquet ds --image-column jpg --caption-column caption
      tagstream convert yfcc100m_dataset.bz2 ds --format yfcc --images yfcc-images/
      tagstream convert my-hf-dataset/ ds --split validation        # data/validation-*.parquet
      tagstream convert saved-dataset/ ds                           # Dataset.save_to_disk's folder
      tagstream convert photos.jsonl /shared/ds --engine ray --address auto --parts 64
      tagstream convert photos.jsonl /shared/ds --parts 64     # one scan, the plan the parts reuse
      tagstream convert photos.jsonl /shared/ds --part 3/64   # e.g. SLURM_ARRAY_TASK_ID=3, then merge
    """
    from tagstream.tools.convert.engine import ConvertRefused
    from tagstream.tools.convert.launch import run_conversion
    from tagstream.tools.convert.parts import PartsPlan, PartSummary

    try:
        summary = run_conversion(
            src,
            out,
            engine=engine,
            part=part,
            parts=parts,
            address=address,
            format=fmt,
            shard_size=shard_size,
            workers=workers,
            image_options=ImageOptions(
                min_side=min_side,
                max_side=max_side,
                max_pixels=max_pixels,
                max_file_bytes=max_file_bytes,
                quality=quality,
                restart_interval=restart_interval,
            ),
            image_column=image_column,
            tags_column=tags_column,
            caption_column=caption_column,
            id_column=id_column,
            tags_field=tags_field,
            caption_field=caption_field,
            id_field=id_field,
            status_field=status_field,
            image_root=image_root,
            split=split,
            images=images,
            yfcc_machine_tags=yfcc_machine_tags,
            progress=progress,
        )
    except (ConvertRefused, ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # storage.StorageError after its retries, a missing object, a local I/O error
        started = Path(out).is_dir()  # nothing to resume when OUT could not even be made
        raise click.ClickException(
            f"{exc}; rerun the same command to resume where it stopped" if started else str(exc)
        ) from None
    if isinstance(summary, PartsPlan):
        click.echo(
            f"{summary.out}: {summary.inputs} inputs in {summary.parts} parts, {summary.committed} committed; "
            f"next, on machines that see OUT: `tagstream convert SRC OUT --part I/{summary.parts}` for each "
            f"I in 0..{summary.parts - 1} (same options), then `tagstream merge OUT`"
        )
        return
    if isinstance(summary, PartSummary):
        done = "was already committed: nothing changed" if summary.already_complete else "committed"
        click.echo(f"part {summary.part} (inputs {summary.input_start}..{summary.input_stop - 1}) {done}")
        click.echo(f"images    {summary.images} in {summary.shards} shards, rejected {summary.rejected}")
        if summary.processed:
            click.echo(
                f"speed     {summary.processed / summary.seconds:.1f} inputs/s ({summary.processed} in {summary.seconds:.1f} s)"
            )
        return
    if summary.already_complete:
        click.echo(f"{summary.out} is already a complete conversion of {src}: nothing to do, nothing changed")
    elif summary.redone:
        click.echo(
            f"{', '.join(summary.redone)} of the finished dataset were missing or cut short: "
            f"converted again from input {summary.resumed_from} on"
        )
    elif summary.resumed_from:
        click.echo(f"resumed after {summary.resumed_from} of {summary.inputs} inputs converted by an earlier run")
    click.echo(f"images    {summary.images} in {summary.shards} shards, {summary.bytes / 2**20:.1f} MiB")
    click.echo(f"tags      {summary.tags}")
    click.echo(f"untagged  {summary.untagged} of {summary.images} images")
    rejected = sum(summary.rejected.values())
    click.echo(f"rejected  {rejected}" + "".join(f"\n  {k:<20} {v}" for k, v in summary.rejected.items()))
    reencoded = summary.reencoded.get("images", 0)
    kinds = "".join(f"\n  {k:<20} {v}" for k, v in summary.reencoded.items() if k != "images")
    click.echo(f"re-encoded {reencoded}{kinds}")
    if summary.processed:
        click.echo(f"speed     {summary.inputs_per_s:.1f} inputs/s ({summary.processed} in {summary.seconds:.1f} s)")
    _tags_missing(summary, require_tags)


def _restart_interval(value: str) -> int | str:
    """--restart-interval's value: 'rows', or an integer in [0, 65535]."""
    if value == "rows":
        return value
    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise click.BadParameter(f"{value!r} is not 0, 'rows' or an integer in [1, 65535] (MCUs per interval)")
    return n


def _tags_missing(summary, require: bool) -> None:
    """One line when no image has a tag, or more than half have none: the fields the inputs held and the option
    that names the tags. A warning (the dataset is whole and has uses without tags: de-dup, embeddings, eval);
    with --require-tags, exit 1."""
    if not summary.images or summary.untagged * 2 <= summary.images:
        return
    how = "no image has a tag" if summary.untagged == summary.images else "more than half of the images have no tag"
    seen = ", ".join(summary.fields) or "unknown"
    line = f"{how} ({summary.untagged} of {summary.images}): the inputs hold the fields {seen}; name the tags with {summary.tag_option}"
    if require:
        raise click.ClickException(line)
    click.echo(f"warning: {line} (--require-tags makes this an error)", err=True)
