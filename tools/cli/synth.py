"""`tagstream synth`: write a synthetic hashtag world (images, hashtags.jsonl, downstream split)."""

from __future__ import annotations

from pathlib import Path

import click

from tagstream.tools.synth.world import WorldConfig, make_world


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", default=3000, show_default=True, type=click.IntRange(min=1), help="Pretraining images.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Same seed, same bytes.")
@click.option(
    "--downstream-classes",
    default=24,
    show_default=True,
    type=click.IntRange(min=0),
    help="Classes of the clean downstream split, spread from frequent to rare concepts.",
)
@click.option(
    "--downstream-train",
    default=30,
    show_default=True,
    type=click.IntRange(min=0),
    help="Train images per downstream class.",
)
@click.option(
    "--downstream-eval",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="Eval images per downstream class.",
)
@click.option(
    "--min-side", default=192, show_default=True, type=click.IntRange(min=16), help="Smallest image side in pixels."
)
@click.option(
    "--max-side", default=320, show_default=True, type=click.IntRange(min=16), help="Largest image side in pixels."
)
@click.option(
    "--zipf",
    default=1.3,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Exponent of concept frequency over rank.",
)
@click.option(
    "--odd",
    is_flag=True,
    help="Also write one image of each odd format (PNG, WebP, GIF, CMYK, 16-bit, oversized, ...).",
)
@click.option(
    "--corrupt",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Add N broken entries (zero-byte, truncated, not an image, missing, bad JSON line, bad record).",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Processes drawing images.")
@click.option(
    "--as",
    "as_",
    type=click.Choice(["files", "tar"]),
    default="files",
    show_default=True,
    help="tar: also write the world as WebDataset tars in OUT/tars/ (img2dataset's layout).",
)
@click.option(
    "--tar-samples", default=1000, show_default=True, type=click.IntRange(min=1), help="Samples per tar (--as tar)."
)
def synth(
    out: Path,
    images: int,
    seed: int,
    downstream_classes: int,
    downstream_train: int,
    downstream_eval: int,
    min_side: int,
    max_side: int,
    zipf: float,
    odd: bool,
    corrupt: int,
    workers: int,
    as_: str,
    tar_samples: int,
) -> None:
    """Write a synthetic hashtag world into OUT (a new or empty folder).

    Photos of drawn concepts with Zipf-distributed, noisy hashtags (spelling variants, synonyms,
    non-visual and junk tags, missing tags) in OUT/hashtags.jsonl; OUT/synonyms.tsv and
    OUT/stoplist.txt for `tagstream vocab`; a clean one-class-per-image split in
    OUT/downstream/{train,eval}/<class>/; the ground truth in OUT/world.json. With --as tar, the
    same images and hashtags also as WebDataset tars OUT/tars/NNNNN.tar (KEY.jpg, KEY.json, KEY.txt).

    \b
    Example:
      tagstream synth demo-src --images 3000 --seed 0 --workers 2
      tagstream convert demo-src/hashtags.jsonl demo-ds
      tagstream synth demo-tar --images 3000 --as tar --tar-samples 500
      tagstream convert 'demo-tar/tars/{00000..00005}.tar' demo-ds-tar
    """
    try:
        cfg = WorldConfig(
            images=images,
            seed=seed,
            downstream_classes=downstream_classes,
            downstream_train=downstream_train,
            downstream_eval=downstream_eval,
            min_side=min_side,
            max_side=max_side,
            zipf=zipf,
            odd=odd,
            corrupt=corrupt,
        )
        summary = make_world(out, workers=workers, config=cfg, tar_samples=tar_samples if as_ == "tar" else None)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo("\n".join(summary.lines()))
