"""`tagstream embed`: export the pooled features of every image of a dataset, in dataset order."""

from __future__ import annotations

import os

import click


@click.command()
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False),
    help="Checkpoint (tagstream train). Without it: a random-initialised --model.",
)
@click.option(
    "--data", required=True, type=click.Path(file_okay=False), help="Dataset to embed: a directory or a URL (s3://...)."
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output file: .npy (the indices beside it: emb.npy -> emb.indices.npy), .npz or .safetensors.",
)
@click.option("--model", default=None, help="Architecture when no --checkpoint is given.")
@click.option(
    "--vocab",
    default=None,
    help="Vocabulary the loader reads (labels unused); default: the checkpoint's, else the dataset's first.",
)
@click.option("--image-size", type=int, default=None, help="Input size (default: the checkpoint's).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True, help="Loader worker processes per rank.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--weights",
    type=click.Choice(["model", "ema"]),
    default="model",
    show_default=True,
    help="The checkpoint's trained weights, or their moving average (a run with optim.ema > 0).",
)
@click.option(
    "--content-box/--whole-frame",
    default=False,
    show_default=True,
    help="Centre crop inside each image's content box (uniform borders cut, as `tagstream dedup` embeds), "
    "or of the whole frame. Use --content-box for features given to `dedup --features`.",
)
def embed(checkpoint, data, out, model, vocab, image_size, batch_size, workers, device, weights, content_box) -> None:
    """Write the pooled penultimate features of every image, with the dataset indices, in dataset order.

    Under torchrun each rank embeds its share and writes a part; rank 0 joins the parts into OUT.

    \b
    Examples:
      tagstream embed --checkpoint runs/sqrt/step-000000300.pt --data ds --out emb.safetensors
      torchrun --standalone --nproc_per_node 8 -m tagstream.tools.cli embed \\
          --checkpoint c.pt --data ds --out emb.npy
      tagstream embed --checkpoint c.pt --data ds --out train.npy --content-box   # for `dedup --features`
    """
    from tagstream.train.embed import EmbedConfig
    from tagstream.train.embed import embed as run_embed

    cfg = EmbedConfig(
        data=data,
        out=out,
        checkpoint=checkpoint,
        model=model,
        vocab=vocab,
        image_size=image_size,
        batch_size=batch_size,
        workers=workers,
        device=device,
        weights=weights,
        content_box=content_box,
    )
    summary = run_embed(cfg)
    if int(os.environ.get("RANK", 0)) == 0:
        click.echo(
            f"embedded {summary['images']} images x {summary['feature_dim']} features "
            f"({summary['model']}, {summary['image_size']} px, {summary['world']} rank(s)) in {summary['seconds']} s -> {out}"
        )
