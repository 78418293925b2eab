"""`tagstream verify DATASET`: the click command over tagstream.tools.verify.checks.verify."""

from __future__ import annotations

import click


@click.command()
@click.argument("dataset", type=click.Path())
def verify(dataset):
    """Recompute every shard checksum and parse every record of DATASET; exit 1 naming each damaged shard.

    Catches flipped bytes, missing or truncated shards and index files, count mismatches and an unknown
    format version.

    \b
    Example:
      tagstream verify ds
    """
    from tagstream.tools.verify.checks import verify as run_verify

    report = run_verify(dataset)
    if report.ok:
        click.echo(f"OK: {report.shards} shards, {report.images} images, {report.bytes / 2**20:.1f} MiB verified")
        return
    for problem in report.problems:
        click.echo(f"DAMAGED {problem}", err=True)
    named = ", ".join(report.damaged_shards) or "dataset files"
    raise click.ClickException(f"{len(report.problems)} problem(s) in {dataset} (damaged: {named})")
