"""`tagstream bench sampler`: the click command over tagstream.tools.bench.sampler."""

from __future__ import annotations

import json

import click

from tagstream.kernels.weights import sampling_power
from tagstream.tools.bench.sampler import format_table, run_sampler_bench


@click.command("sampler")
@click.option("--images", default=10_000_000, show_default=True, type=click.IntRange(min=1), help="Images in the synthetic index.")
@click.option("--classes", default=17_000, show_default=True, type=click.IntRange(min=3), help="Classes (Zipf-distributed tags).")
@click.option("--draws", default=4_000_000, show_default=True, type=click.IntRange(min=1), help="Draws timed per sampler.")
@click.option("--sampling", default="sqrt", show_default=True, help="natural, sqrt, uniform or power:A.")
@click.option("--ranks", default=64, show_default=True, type=click.IntRange(min=1), help="Ranks for the packing report.")
@click.option("--shards", default=1000, show_default=True, type=click.IntRange(min=1), help="Shards for the packing report.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_sampler(images, classes, draws, sampling, ranks, shards, seed, as_json):
    """Time weights + alias build and draws/s of our sampler against numpy choice(p=),
    torch.multinomial and WeightedRandomSampler on one synthetic Zipf-tagged index, with ratios.

    Torch refuses more than 2^24 categories; that shows as "refused" in the table.

    \b
    Example:
      tagstream bench sampler --images 10000000
      tagstream bench sampler --images 100000000 --json
    """
    try:
        sampling_power(sampling)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sampling") from exc
    result = run_sampler_bench(images=images, classes=classes, draws=draws, sampling=sampling, seed=seed, ranks=ranks, shards=shards)
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result))
