"""`tagstream demo`: the whole pipeline on the built-in synthetic hashtag world (what `make demo` runs)."""

from __future__ import annotations

import click


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New or empty folder for every artefact.")
@click.option(
    "--size",
    type=click.Choice(["tiny", "small", "full"]),
    default="full",
    show_default=True,
    help="full: the real demo (about 5 min on 2 idle CPU cores); small: a quicker look; tiny: a smoke test.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True, help="Processes for generation and conversion.")
@click.option(
    "--vocab-filter",
    type=click.Choice(["wordnet", "none"]),
    default="wordnet",
    show_default=True,
    help="wordnet: keep only hashtag classes with a WordNet noun member, as the paper did (needs WordNet 3.0 files); "
    "none: synonyms merged, stop-tags dropped, min-count only.",
)
@click.option(
    "--wordnet",
    "wordnet_dir",
    default="/usr/share/wordnet",
    show_default=True,
    type=click.Path(file_okay=False),
    help="WordNet 3.0 database folder.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace OUT if an earlier demo wrote it (any other non-empty folder is refused)."
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def demo(out, size, seed, workers, vocab_filter, wordnet_dir, overwrite, progress) -> None:
    """Generate a synthetic hashtag world, convert it, build the vocabulary, pretrain a small model with
    natural and with square-root sampling, linear-probe both and a random-init baseline on the clean
    labelled split, and print the results table; writes results.json, results.md and plots to OUT.

    \b
    Example:
      tagstream demo --out demo-out            # about 5 minutes on 2 idle CPU cores
      tagstream demo --out /tmp/d --size tiny  # a smoke test
    """
    from tagstream.tools.demo.run import run_demo

    run_demo(
        out,
        size=size,
        seed=seed,
        workers=workers,
        vocab_filter=vocab_filter,
        wordnet_dir=wordnet_dir,
        overwrite=overwrite,
        progress=progress,
        echo=click.echo,
    )
