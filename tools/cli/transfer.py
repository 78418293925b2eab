"""`tagstream transfer`: linear probe or fine-tuning of a checkpoint on a labelled task, with a random-init baseline."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from tagstream.loader.data import FormatError


def _ensure_label_vocab(dataset: str, name: str) -> str | None:
    """Build vocab NAME (every raw tag a class, no filtering) on a downstream dataset that lacks it."""
    from tagstream.loader.data import Dataset, local_path
    from tagstream.tools.vocab.build import VocabOptions, build_vocab

    if name in Dataset(dataset).vocab_names():
        return None
    if local_path(dataset) is None:
        raise click.ClickException(
            f"{dataset} has no vocabulary {name!r}: build it on a local copy (tagstream vocab) and push that"
        )
    result = build_vocab(dataset, name, VocabOptions())
    return f"built vocabulary {name!r} on {dataset}: {result.report.get('classes', '?')} classes"


@click.command()
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False),
    help="Pretrained checkpoint (tagstream train). Without it: a random-initialised --model only.",
)
@click.option(
    "--train",
    "train_ds",
    type=click.Path(file_okay=False),
    help="Labelled downstream training dataset (a directory or a URL); zeroshot: optional, fits only the prior "
    "correction's strength.",
)
@click.option(
    "--eval",
    "eval_ds",
    required=True,
    type=click.Path(file_okay=False),
    help="Labelled downstream evaluation dataset (a directory or a URL).",
)
@click.option(
    "--mode",
    type=click.Choice(["linear", "finetune", "zeroshot"]),
    default="linear",
    show_default=True,
    help="linear: frozen features + logistic regression; finetune: whole network, new head; zeroshot: no training, "
    "each class read from the hashtag head through the hashtags it maps to (synonyms, WordNet).",
)
@click.option(
    "--preset",
    type=click.Choice(["none", "swag"]),
    default="none",
    show_default=True,
    help="finetune: swag = SWAG's published fine-tuning recipe (8 epochs, batch 512, LR 6e-3 cosine, weight decay 0); "
    "it replaces --epochs, --finetune-batch-size and --lr.",
)
@click.option(
    "--wordnet",
    "wordnet_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="zeroshot: WordNet 3.0 folder for the class map when the pretraining vocabulary was built without one "
    "(default: the vocabulary's own, else /usr/share/wordnet when present).",
)
@click.option(
    "--baseline",
    type=click.Choice(["none", "random"]),
    default="none",
    show_default=True,
    help="random: also run a random-initialised backbone with the same protocol.",
)
@click.option(
    "--vocab",
    default="labels",
    show_default=True,
    help="Vocabulary of the downstream datasets holding the class labels (built from the raw tags, no filtering, if missing).",
)
@click.option(
    "--task",
    type=click.Choice(["auto", "single", "multi"]),
    default="auto",
    show_default=True,
    help="single: top-1/top-5; multi: mAP; auto: single when no image has two classes.",
)
@click.option("--model", default=None, help="Architecture of the random backbone when no --checkpoint is given.")
@click.option(
    "--image-size",
    type=int,
    default=None,
    help="Input size (default: the checkpoint's); a ViT's position embedding is interpolated, e.g. 384 after pretraining at 224.",
)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True, help="Loader worker processes.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--epochs", type=int, default=3, show_default=True, help="Fine-tuning epochs.")
@click.option("--finetune-batch-size", type=int, default=32, show_default=True, help="Fine-tuning batch size.")
@click.option("--lr", type=float, default=0.01, show_default=True, help="Fine-tuning learning rate (SGD, cosine).")
@click.option(
    "--layer-decay",
    type=float,
    default=1.0,
    show_default=True,
    help="Fine-tuning: layer-wise LR decay; each block below the head learns at this fraction of the rate of the one above (ViT "
    "encoder layers, ResNet/RegNet stages; 1 = off; 0.65-0.75 is usual for ViTs).",
)
@click.option(
    "--shots",
    default="",
    metavar="K,K,...",
    help="Linear mode: also low-shot probes on K images per class, e.g. 1,5,10,25.",
)
@click.option(
    "--shot-seeds",
    type=int,
    default=5,
    show_default=True,
    help="Draws of the K images per class (mean ± std over them).",
)
@click.option(
    "--weights",
    type=click.Choice(["model", "ema"]),
    default="model",
    show_default=True,
    help="The checkpoint's trained weights, or their moving average (a run with optim.ema > 0).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default="transfer.json", show_default=True, help="JSON report.")
def transfer(
    checkpoint,
    train_ds,
    eval_ds,
    mode,
    preset,
    wordnet_dir,
    baseline,
    vocab,
    task,
    model,
    image_size,
    batch_size,
    workers,
    device,
    epochs,
    finetune_batch_size,
    lr,
    layer_decay,
    shots,
    shot_seeds,
    weights,
    seed,
    out,
) -> None:
    """Transfer a pretrained backbone to a labelled task and print top-1/top-5 (or mAP) per backbone.

    Classes are matched between --train and --eval by name. Writes the full report (per-class
    accuracy, chosen probe weight decay, timings) as JSON.

    \b
    Examples:
      tagstream transfer --checkpoint runs/sqrt/step-000000300.pt \\
          --train down/train --eval down/eval --mode linear --baseline random --shots 1,5,10,25 --out transfer.json
      tagstream transfer --checkpoint runs/vit/step-000100000.pt \\
          --train down/train --eval down/eval --mode finetune --preset swag --image-size 384 --out finetune-384.json
      tagstream transfer --checkpoint runs/sqrt/step-000000600.pt --eval down/eval --mode zeroshot \\
          --baseline random --out zeroshot.json
    """
    if mode == "zeroshot":
        return _zeroshot(
            checkpoint,
            train_ds,
            eval_ds,
            vocab,
            baseline,
            wordnet_dir,
            image_size,
            batch_size,
            workers,
            device,
            weights,
            seed,
            out,
        )
    if not train_ds:
        raise click.UsageError(f"--train is required with --mode {mode}")
    from tagstream.loader.data import Dataset
    from tagstream.train.lowshot import LowShotConfig, parse_shots
    from tagstream.train.probe import ProbeConfig
    from tagstream.train.transfer import FinetuneConfig, TransferConfig, run_transfer
    from tagstream.train.transfer_report import format_table

    built = []  # the vocabularies this run made: a failed run takes them away again
    try:
        for ds in (train_ds, eval_ds):
            note = _ensure_label_vocab(ds, vocab)
            if note:
                built.append(ds)
                click.echo(note)
        cfg = TransferConfig(
            train=train_ds,
            eval=eval_ds,
            checkpoint=checkpoint,
            mode=mode,
            baseline=baseline,
            vocab=vocab,
            task=task,
            model=model,
            image_size=image_size,
            batch_size=batch_size,
            workers=workers,
            device=device,
            seed=seed,
            weights=weights,
            progress=True,
            probe=ProbeConfig(seed=seed),
            finetune=FinetuneConfig.preset(
                preset, epochs=epochs, batch_size=finetune_batch_size, lr=lr, layer_decay=layer_decay
            ),
            low_shot=LowShotConfig(shots=parse_shots(shots), seeds=shot_seeds),
        )
        report = run_transfer(cfg, out=out)
    except (ValueError, FormatError) as exc:
        for ds in built:
            shutil.rmtree(Dataset(ds).vocab_dir(vocab), ignore_errors=True)
            click.echo(f"removed the vocabulary {vocab!r} built on {ds}: the transfer failed")
        raise click.ClickException(str(exc)) from exc
    click.echo(format_table(report))
    click.echo(f"wrote {Path(out)}")


def _zeroshot(
    checkpoint,
    train_ds,
    eval_ds,
    vocab,
    baseline,
    wordnet_dir,
    image_size,
    batch_size,
    workers,
    device,
    weights,
    seed,
    out,
) -> None:
    """--mode zeroshot: the class map from the checkpoint's pretraining vocabulary, then the scores."""
    from tagstream.tools.vocab.classmap import zero_shot_transfer
    from tagstream.train.zeroshot import format_zeroshot

    if checkpoint is None:
        raise click.UsageError("--mode zeroshot reads a checkpoint's hashtag head: give --checkpoint")
    try:
        for ds in (eval_ds, train_ds) if train_ds else (eval_ds,):
            note = _ensure_label_vocab(ds, vocab)
            if note:
                click.echo(note)
        report = zero_shot_transfer(
            checkpoint,
            eval_ds,
            train=train_ds,
            vocab=vocab,
            baseline=baseline,
            wordnet_dir=wordnet_dir,
            image_size=image_size,
            batch_size=batch_size,
            workers=workers,
            device=device,
            weights=weights,
            seed=seed,
            progress=True,
            out=out,
        )
    except (ValueError, FormatError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_zeroshot(report))
    click.echo(f"wrote {Path(out)}")
