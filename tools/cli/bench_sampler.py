"""`tagstream bench sampler`: the click command over tagstream.tools.bench.sampler."""

from __future__ import annotations

import json

import click

from tagstream.kernels.weights import sampling_power
from tagstream.tools.bench.sampler import format_table, run_sampler_bench
from tagstream.tools.bench.sampler_startup import format_startup, run_startup_bench


@click.command("sampler")
@click.option(
    "--images", default=10_000_000, show_default=True, type=click.IntRange(min=1), help="Images in the synthetic index."
)
@click.option(
    "--classes", default=17_000, show_default=True, type=click.IntRange(min=3), help="Classes (Zipf-distributed tags)."
)
@click.option(
    "--draws", default=4_000_000, show_default=True, type=click.IntRange(min=1), help="Draws timed per sampler."
)
@click.option("--sampling", default="sqrt", show_default=True, help="natural, sqrt, uniform or power:A.")
@click.option(
    "--ranks", default=64, show_default=True, type=click.IntRange(min=1), help="Ranks for the packing report."
)
@click.option(
    "--shards", default=1000, show_default=True, type=click.IntRange(min=1), help="Shards for the packing report."
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--world",
    type=click.IntRange(min=1),
    default=None,
    help="Start-up bench: one rank of this world size beside world 1.",
)
@click.option(
    "--rank", type=click.IntRange(min=0), default=0, show_default=True, help="Start-up bench: the rank measured."
)
@click.option(
    "--shard-size",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Start-up bench: images per shard.",
)
@click.option(
    "--data",
    type=click.Path(file_okay=False),
    default=None,
    help="Start-up bench: keep the synthetic dataset here and reuse it (default: a temporary directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_sampler(images, classes, draws, sampling, ranks, shards, seed, world, rank, shard_size, data, as_json):
    """Time weights + alias build and draws/s of our sampler against numpy choice(p=),
    torch.multinomial and WeightedRandomSampler on one synthetic Zipf-tagged index, with ratios.
    Torch refuses more than 2^24 categories; that shows as "refused" in the table.

    With --world W: the start-up bench instead. On an index-only synthetic dataset (no pixels,
    about 17 bytes of disk per image) with a mask and a holdout split in use, it measures, each in
    its own process: the cached precompute (world 1), the packing onto W partitions, rank R's
    start-up with the cache, and world 1's start-up; seconds and peak memory (max RSS) each.

    \b
    Example:
      tagstream bench sampler --images 10000000
      tagstream bench sampler --images 100000000 --json
      tagstream bench sampler --images 1000000000 --world 336 --rank 17 --data /scratch/idx
    """
    try:
        sampling_power(sampling)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sampling") from exc
    if world is not None:
        if rank >= world:
            raise click.BadParameter(f"rank {rank} is not in [0, {world})", param_hint="--rank")
        try:
            result = run_startup_bench(
                images=images,
                world=world,
                rank=rank,
                classes=classes,
                shard_size=shard_size,
                sampling=sampling,
                data=data,
                seed=seed,
            )
        except ValueError as exc:  # not enough disk for the dataset
            raise click.ClickException(str(exc)) from exc
        click.echo(json.dumps(result, indent=2) if as_json else format_startup(result))
        return
    result = run_sampler_bench(
        images=images, classes=classes, draws=draws, sampling=sampling, seed=seed, ranks=ranks, shards=shards
    )
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result))
