"""`tagstream verify DATASET`: the click command over tagstream.tools.verify.checks.verify."""

from __future__ import annotations

import click


@click.command()
@click.argument("dataset", type=click.Path())
@click.option(
    "--deep",
    is_flag=True,
    help="Also check every image: header within the pixel limit, size equal to the index's, every scan decodable.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Shards checked at once, one process each (give it the machine's cores: checksums are CPU-bound).",
)
def verify(dataset, deep, workers):
    """Recompute every shard checksum and parse every record of DATASET; exit 1 naming each damaged shard.

    Catches flipped bytes, missing or truncated shards and index files, damaged LMDB structure, count
    mismatches, malformed manifests, vocabularies and masks, an index, tags.tsv, vocabulary or mask that does
    not match its checksum, and an unknown format version; never crashes on damage. What an older tagstream
    recorded no checksum for is named in a note. --deep also decodes every image (strictly: corrupt scan data is a fault).

    DATASET may be a URL (s3://...): every file is first fetched into the local cache (shards checked
    against the manifest's sha256 as they arrive), then checked there.

    \b
    Example:
      tagstream verify ds
      tagstream verify ds --deep --workers 8
      tagstream verify s3://my-bucket/datasets/ds
    """
    from tagstream.loader.data import local_path
    from tagstream.tools.verify.checks import verify as run_verify

    local = local_path(dataset)  # a plain path or file://
    root = str(local) if local is not None else _fetch(dataset)
    report = run_verify(root, deep=deep, workers=workers)
    for note in report.notes:
        click.echo(f"note: {note}")
    if report.ok:
        how = "every image decoded" if deep else "records parsed"
        click.echo(
            f"OK: {report.shards} shards, {report.images} images, {report.bytes / 2**20:.1f} MiB verified ({how})"
        )
        return
    for problem in report.problems:
        click.echo(f"DAMAGED {problem}", err=True)
    named = ", ".join(report.damaged_shards) or "dataset files"
    raise click.ClickException(f"{len(report.problems)} problem(s) in {dataset} (damaged: {named})")


def _fetch(url: str) -> str:
    """A URL dataset's every file in its local mirror; the mirror's directory."""
    from tagstream.loader.data import Dataset, FormatError, StorageError

    try:
        ds = Dataset(url)
        ds.mirror.fetch_all()
    except (FormatError, StorageError) as exc:
        raise click.ClickException(str(exc)) from None
    return str(ds.root)
