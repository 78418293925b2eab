"""`tagstream inspect DATASET`: the click command over tagstream.tools.inspect."""

from __future__ import annotations

import click


@click.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for machines).")
@click.option("--top", type=click.IntRange(min=0), default=20, show_default=True, help="How many of the most frequent tags.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also draw the tag-frequency distribution (rank vs count, log-log) to this PNG.")
def inspect(dataset, as_json, top, plot):
    """Show what DATASET holds: images, shards, bytes, image sizes, tags and the most frequent ones, rejects.

    \b
    Examples:
      tagstream inspect ds
      tagstream inspect ds --json --top 50
      tagstream inspect ds --plot tags.png
    """
    from tagstream.loader.format import FormatError

    from .inspect import format_report, inspect_dataset, plot_tag_frequency, to_json

    try:
        report = inspect_dataset(dataset, top=top)
        if plot:
            plot_tag_frequency(dataset, plot)
    except FormatError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(to_json(report) if as_json else format_report(report))
    if plot and not as_json:
        click.echo(f"tag-frequency plot written to {plot}")
