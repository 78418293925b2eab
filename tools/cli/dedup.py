"""`tagstream dedup`: mask the training images that are near or exact copies of evaluation images."""

from __future__ import annotations

import json

import click

from tagstream.kernels.dedup import MAX_DISTANCE
from tagstream.tools.dedup.features import DEFAULT_THRESHOLD, EmbedMethod, EmbedOptions
from tagstream.tools.dedup.grid import ORDERS
from tagstream.tools.dedup.hashing import DEFAULT_MAX_DISTANCE
from tagstream.tools.dedup.knn import KINDS
from tagstream.tools.dedup.report import format_summary
from tagstream.tools.dedup.run import METHODS, run_dedup


@click.command()
@click.argument("train", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--against",
    "against",
    multiple=True,
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="An evaluation dataset (repeat for several).",
)
@click.option(
    "--name", required=True, help="Mask name: writes TRAIN/masks/NAME.npy, NAME.pairs.tsv, NAME.summary.json."
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="hash",
    show_default=True,
    help="hash: perceptual hash; embed: cosine of embeddings (faiss kNN); both: the union.",
)
@click.option(
    "--max-distance",
    default=DEFAULT_MAX_DISTANCE,
    show_default=True,
    type=click.IntRange(0, MAX_DISTANCE),
    help="Largest perceptual-hash Hamming distance (of 64 bits) that counts as a copy.",
)
@click.option(
    "--features",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="TRAIN's embeddings from `tagstream embed` (.npy/.npz/.safetensors; repeat for per-rank parts).",
)
@click.option(
    "--against-features",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="An evaluation set's embeddings, one per --against in the same order.",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False),
    help="Embed TRAIN and every --against with this checkpoint instead of reading feature files.",
)
@click.option(
    "--threshold",
    default=DEFAULT_THRESHOLD,
    show_default=True,
    type=float,
    help="Smallest cosine similarity that counts as a copy; model-specific: take it from "
    "`tagstream bench dedup --method embed --checkpoint CKPT --target-fpr F`.",
)
@click.option(
    "--index",
    type=click.Choice(KINDS),
    default="auto",
    show_default=True,
    help="faiss index over the evaluation features (auto: exact when affordable, else HNSW, else IVF).",
)
@click.option("--vocab", default=None, help="With --checkpoint: the vocabulary the loader reads (labels unused).")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="With --checkpoint: where the model runs.",
)
@click.option(
    "--eval-vocab",
    default=None,
    help="Vocabulary of the evaluation sets for the per-class report (default: their first).",
)
@click.option(
    "--exact/--no-exact",
    default=True,
    show_default=True,
    help="Also match identical stored image bytes: from the digests stored at conversion, reading only the "
    "images whose digest matches (a dataset converted before them is read whole).",
)
@click.option(
    "--mirrors",
    is_flag=True,
    help="Hash method: also match copies flipped left-right (hashes each evaluation image mirrored).",
)
@click.option("--grid", type=click.Path(dir_okay=False), help="Draw matched pairs side by side into this PNG.")
@click.option(
    "--grid-pairs", default=16, show_default=True, type=click.IntRange(min=1), help="Pairs drawn in the grid."
)
@click.option(
    "--grid-order",
    type=click.Choice(ORDERS),
    default="closest",
    show_default=True,
    help="closest pairs first, or a seeded random sample (shows borderline matches).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the grid's random sample.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def dedup(
    train,
    against,
    name,
    method,
    max_distance,
    features,
    against_features,
    checkpoint,
    threshold,
    index,
    vocab,
    device,
    eval_vocab,
    exact,
    mirrors,
    grid,
    grid_pairs,
    grid_order,
    seed,
    as_json,
) -> None:
    """Find every TRAIN image that is a near copy of an image of an --against dataset (perceptual hash within
    --max-distance, and/or embedding cosine >= --threshold) or byte-identical to one, and write the mask
    TRAIN/masks/NAME.npy (True = excluded; no data is deleted), the matched pairs and a summary with the
    contamination report (per evaluation set, method and class). Train with data.masks = [NAME].

    \b
    Example:
      tagstream dedup ds --against imagenet-val --name eval-copies --grid pairs.png
      tagstream embed --checkpoint c.pt --data ds --out ds.npy
      tagstream embed --checkpoint c.pt --data imagenet-val --out val.npy
      tagstream dedup ds --against imagenet-val --name eval-copies --method both \\
          --features ds.npy --against-features val.npy --threshold 0.93
      tagstream dedup ds --against imagenet-val --name eval-copies --method embed --checkpoint c.pt
      tagstream train --config resnet50 --dataset ds --vocab v1 --set data.masks=eval-copies
    """
    embedding = None
    if method != "hash":
        options = EmbedOptions(checkpoint=checkpoint, vocab=vocab, device=device) if checkpoint else None
        embedding = EmbedMethod(
            threshold=threshold,
            features=tuple(features),
            against_features=tuple(against_features),
            embed=options,
            index=index,
        )
    elif features or against_features or checkpoint:
        raise ValueError("--features/--against-features/--checkpoint are for --method embed or both")
    summary = run_dedup(
        train,
        against,
        name=name,
        method=method,
        max_distance=max_distance,
        exact=exact,
        mirrors=mirrors,
        embedding=embedding,
        eval_vocab=eval_vocab,
        grid=grid,
        grid_pairs=grid_pairs,
        grid_order=grid_order,
        seed=seed,
    )
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))
