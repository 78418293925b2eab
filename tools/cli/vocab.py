"""`tagstream vocab`: build a class vocabulary from a dataset's raw hashtags (no shard is read)."""

from __future__ import annotations

import click

from tagstream.tools.vocab.build import VocabOptions, build_vocab, format_report


@click.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--name", required=True, help="Vocabulary name: written to DATASET/vocab/NAME/.")
@click.option(
    "--synonyms",
    type=click.Path(dir_okay=False),
    help="TSV: canonical<TAB>synonym[<TAB>...] per line; merges them into one class.",
)
@click.option(
    "--wordnet",
    type=click.Path(file_okay=False),
    help="WordNet 3.0 database dir (e.g. /usr/share/wordnet): merge tags of one noun synset.",
)
@click.option(
    "--stoplist", type=click.Path(dir_okay=False), help="Tags to drop, one per line (non-visual: tbt, love, ...)."
)
@click.option(
    "--keep",
    type=click.Path(dir_okay=False),
    help="Target list, one tag per line: keep only classes named by it or having a member in it.",
)
@click.option("--min-count", type=int, default=1, show_default=True, help="Drop classes on fewer images.")
@click.option("--top", type=int, default=None, help="Keep only the K most frequent classes.")
@click.option("--force", is_flag=True, help="Overwrite an existing vocabulary of this name.")
def vocab(dataset, name, synonyms, wordnet, stoplist, keep, min_count, top, force) -> None:
    """Build DATASET/vocab/NAME/ (class table + per-image labels) from the raw tags.

    Order: synonyms -> WordNet -> stoplist -> keep -> min-count/top-K (image counts of merged
    classes) -> ids by descending count. Prints the report, also saved as report.json.

    \b
    Example:
      tagstream vocab ds --name v1 --wordnet /usr/share/wordnet \\
          --stoplist stop.txt --min-count 5 --top 1500
    """
    options = VocabOptions(
        synonyms=synonyms, wordnet=wordnet, stoplist=stoplist, keep=keep, min_count=min_count, top=top
    )
    result = build_vocab(dataset, name, options, force=force)
    click.echo(format_report(result.report))
    click.echo(f"wrote {result.path}")
