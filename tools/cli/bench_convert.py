"""`tagstream bench convert`: the click command over tagstream.tools.bench.convert."""

from __future__ import annotations

import json

import click

from tagstream.tools.bench.convert import ENGINES, format_table, run_convert_bench


@click.command("convert")
@click.argument("workdir", type=click.Path(file_okay=False))
@click.option(
    "--images", default=600, show_default=True, type=click.IntRange(min=1), help="Synthetic inputs to convert."
)
@click.option("--width", default=640, show_default=True, type=click.IntRange(min=32), help="Width of each input image.")
@click.option(
    "--height", default=480, show_default=True, type=click.IntRange(min=32), help="Height of each input image."
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="local",
    show_default=True,
    help="ray: add rows for a local Ray cluster of 1 and of 2 CPUs.",
)
@click.option(
    "--parts", default=8, show_default=True, type=click.IntRange(1, 99_999), help="Parts of the partitioned rows."
)
@click.option("--max-side", default=1024, show_default=True, type=click.IntRange(min=1), help="convert's --max-side.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_convert(workdir, images, width, height, engine, parts, max_side, as_json):
    """Conversion images/s of each engine (one process with 1 and 2 workers, --part + merge, Ray with 1 and 2
    CPUs) on one synthetic photo-like source in WORKDIR, with ratios to the one-process 1-worker row; beside
    each one-process row, the same images converted from WebDataset tars and the full-decode ceiling
    (read + decode only) of as many processes.

    \b
    Example:
      tagstream bench convert /tmp/cbench --engine ray --images 600
      tagstream bench convert /tmp/cbench --width 1080 --height 1080 --max-side 320 --json
    """
    result = run_convert_bench(
        workdir, images=images, width=width, height=height, engine=engine, parts=parts, max_side=max_side
    )
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result))
