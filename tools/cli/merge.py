"""`tagstream merge OUT`: the click command over tagstream.tools.convert.merge.merge."""

from __future__ import annotations

import click


@click.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes placing (and, where tag ids change, rewriting) the shards.",
)
def merge(out, workers):
    """Merge the N committed parts of a partitioned conversion in OUT into one dataset.

    Each part was converted by `tagstream convert SRC OUT --part I/N` (on any machine that sees OUT).
    The merge refuses, writing nothing, until all N parts are committed from the same input and options
    and each part's record and shards check out; the dataset then holds the records a one-process conversion of SRC holds, in the same order. A merge
    that was interrupted resumes when run again; the parts are deleted only once the merged dataset verifies.

    \b
    Example:
      for i in 0 1 2; do tagstream convert photos.jsonl ds --part $i/3; done
      tagstream merge ds --workers 8
    """
    from tagstream.loader.data import FormatError
    from tagstream.tools.convert.engine import ConvertRefused
    from tagstream.tools.convert.merge import merge as run_merge
    from tagstream.tools.convert.outdir import WriteFailed

    try:
        summary = run_merge(out, workers=workers)
    except (ConvertRefused, WriteFailed, FormatError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # a folder gone, a file unreadable: nothing is lost, a rerun resumes
        raise click.ClickException(
            f"merge of {out} stopped: {exc}; the parts are kept, fix it and run `tagstream merge` again (it resumes)"
        ) from None
    if summary.already_complete:
        click.echo(f"{summary.out} is already merged: nothing to do, nothing changed")
    click.echo(f"images    {summary.images} in {summary.shards} shards, {summary.bytes / 2**20:.1f} MiB")
    click.echo(f"tags      {summary.tags}")
    click.echo(f"rejected  {sum(summary.rejected.values())}")
