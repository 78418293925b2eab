"""`tagstream push DATASET URL`: the click command over tagstream.loader.data.push.push."""

from __future__ import annotations

import click


@click.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.argument("url")
@click.option(
    "--replace-foreign",
    is_flag=True,
    help="Write the dataset under a prefix that holds objects no tagstream push wrote (its file names are "
    "overwritten; every other object is still left alone).",
)
def push(dataset, url, replace_foreign):
    """Upload DATASET to object storage at URL (s3://, gs://, ...), so that `tagstream train --dataset URL`
    and the other commands read it from there.

    The manifest goes last (an old one is deleted first), so a reader never sees a manifest whose shards are
    not all uploaded; an interrupted push is simply run again, and uploads only what it had not finished
    (a journal in DATASET/.push/ records each upload; a file changed here or replaced there goes again).

    It deletes only objects a tagstream push of the dataset wrote (a ledger at URL, push.json, names them);
    any other object under URL is left alone and reported, and a prefix holding only such objects is refused
    unless --replace-foreign. Credentials and endpoint come from the backend's usual places (for S3: AWS_PROFILE / AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL for S3-compatible stores).

    \b
    Examples:
      tagstream push ds s3://my-bucket/datasets/ds
      AWS_ENDPOINT_URL=http://minio:9000 tagstream push ds s3://datasets/ds
      tagstream train --config tiny-cpu --dataset s3://my-bucket/datasets/ds --vocab v1 --out runs/tiny
    """
    from tagstream.loader.data import FormatError, StorageError
    from tagstream.loader.data import push as run_push

    try:
        report = run_push(dataset, url, replace_foreign=replace_foreign)
    except (ValueError, FormatError, StorageError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"pushed {report.files} files, {report.bytes / 2**20:.1f} MiB to {report.url} in {report.seconds:.1f} s"
        + (
            f"; {report.skipped} files ({report.skipped_bytes / 2**20:.1f} MiB) were there already"
            if report.skipped
            else ""
        )
        + (f" ({report.removed} objects of an earlier version removed)" if report.removed else "")
    )
    if report.foreign:
        click.echo(
            f"left alone: {len(report.foreign)} object(s) under {report.url} that tagstream did not write, "
            f"e.g. {report.foreign[0]!r}"
        )
