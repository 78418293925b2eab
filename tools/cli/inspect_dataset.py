"""`tagstream inspect DATASET`: the click command over tagstream.tools.inspection.report."""

from __future__ import annotations

import click


@click.command()
@click.argument("dataset", type=click.Path(file_okay=False))  # a directory or a URL (s3://...)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for machines).")
@click.option(
    "--top", type=click.IntRange(min=0), default=20, show_default=True, help="How many of the most frequent tags."
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also draw the tag-frequency distribution (rank vs count, log-log) to this PNG; "
    "with --vocab, the class distribution stored and as sampled on one chart.",
)
@click.option(
    "--vocab", default=None, help="Also show this vocabulary's classes: stored counts vs expected draws per epoch."
)
@click.option(
    "--sampling", default="sqrt", show_default=True, help="Sampling for --vocab: natural, sqrt, uniform or power:A."
)
def inspect(dataset, as_json, top, plot, vocab, sampling):
    """Show what DATASET holds: images, shards, bytes, image sizes, tags and the most frequent ones, rejects.

    \b
    Examples:
      tagstream inspect ds
      tagstream inspect ds --json --top 50
      tagstream inspect ds --plot tags.png
      tagstream inspect ds --vocab v1 --sampling sqrt --plot classes.png
    """
    from tagstream.tools.inspection.report import format_report, inspect_dataset, plot_tag_frequency, to_json

    report = inspect_dataset(dataset, top=top)
    sampled = None
    if vocab:
        from tagstream.tools.inspection.sampling import (
            format_sampling_report,
            plot_sampling,
            sampling_report,
            sampling_section,
        )

        sampled = sampling_report(dataset, vocab, sampling=sampling)
        if as_json:
            report["sampling"] = sampling_section(sampled)
    if plot and sampled is not None:
        plot_sampling(sampled, plot)
    elif plot:
        plot_tag_frequency(dataset, plot)
    click.echo(to_json(report) if as_json else format_report(report))
    if sampled is not None and not as_json:
        click.echo(format_sampling_report(sampled))
    if plot and not as_json:
        click.echo(f"{'class distribution' if sampled is not None else 'tag-frequency'} plot written to {plot}")
