"""`tagstream train`: parse a recipe, overrides and options into a TrainConfig, run tagstream.train.loop.main."""

from __future__ import annotations

import click

# option name -> config key it sets (applied after the recipe, before --set)
OPTION_KEYS = {
    "dataset": "data.dataset",
    "vocab": "data.vocab",
    "sampling": "data.sampling",
    "mask": "data.masks",
    "image_size": "data.image_size",
    "model": "model.name",
    "loss": "model.loss",
    "batch_size": "batch.global_size",
    "grad_accum": "batch.grad_accum",
    "base_lr": "optim.base_lr",
    "schedule": "schedule.kind",
    "epochs": "run.epochs",
    "steps": "run.steps",
    "out": "run.out_dir",
    "device": "run.device",
    "init": "model.init",
}


@click.command("train", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "recipe",
    metavar="RECIPE",
    help="Recipe: a TOML file, or a shipped recipe name (tiny-cpu, resnet50, resnext101_32x{8,16,32,48}d-wsl, vit_{b16,l16,h14}-swag, regnety_{16,32,128}gf-swag).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override one config key (repeatable), e.g. --set run.steps=100.",
)
@click.option("--dataset", type=click.Path(), help="Dataset directory (data.dataset).")
@click.option("--vocab", help="Vocabulary name under the dataset's vocab/ (data.vocab).")
@click.option("--sampling", help="natural | sqrt | uniform | power:A (data.sampling).")
@click.option(
    "--mask",
    multiple=True,
    metavar="NAME",
    help="Exclude the images of masks/NAME.npy, e.g. from `tagstream dedup` (repeatable; data.masks).",
)
@click.option(
    "--image-size",
    metavar="SIZE|SCHEDULE",
    help="Training crop size in pixels, or a progressive-resizing schedule SIZE@EPOCH,... such as 160@0,192@2,224@4 (data.image_size).",
)
@click.option("--model", help="Model name, e.g. resnet50, resnext101_32x16d, vit_b_16, regnet_y_tiny (model.name).")
@click.option(
    "--loss",
    type=click.Choice(["softmax", "sigmoid"]),
    help="softmax on 1/k soft targets, or per-class sigmoid (model.loss).",
)
@click.option("--batch-size", type=int, help="Global batch size over all ranks (batch.global_size).")
@click.option("--grad-accum", type=int, help="Micro-batches per optimizer step (batch.grad_accum).")
@click.option("--base-lr", type=float, help="LR per 256 images, scaled linearly with the batch (optim.base_lr).")
@click.option(
    "--schedule", type=click.Choice(["cosine", "step", "constant"]), help="LR decay after warm-up (schedule.kind)."
)
@click.option("--epochs", type=int, help="Epochs to train (run.epochs).")
@click.option("--steps", type=int, help="Optimizer steps to train; overrides --epochs (run.steps).")
@click.option("--out", type=click.Path(), help="Run directory for config, metrics and checkpoints (run.out_dir).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where to train (run.device).")
@click.option(
    "--init",
    type=click.Path(dir_okay=False),
    metavar="CHECKPOINT",
    help="Start from another run's encoder (e.g. an MAE stage's), its head or decoder dropped (model.init).",
)
@click.option(
    "--resume",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[CHECKPOINT]",
    help="Continue the run in --out from its latest intact checkpoint, or from CHECKPOINT.",
)
@click.option(
    "--resume-anyway",
    "resume_anyway",
    multiple=True,
    metavar="KEY",
    help="With --resume: accept a change of config KEY (e.g. optim.base_lr) that a resume otherwise refuses (repeatable).",
)
def train(
    recipe: str | None,
    overrides: tuple[str, ...],
    resume: str | None,
    resume_anyway: tuple[str, ...],
    **options: object,
) -> None:
    """Pretrain a model on hashtags: one process, or every rank of a torchrun job.

    Settings come from the recipe, then the options, then each --set, in that order; the resolved
    config is saved as OUT/config.json and in every checkpoint. Metrics go to OUT/metrics.jsonl.

    \b
    Examples:
      tagstream train --config tiny-cpu --dataset ds --vocab v1 --out runs/tiny
      tagstream train --config tiny-cpu --dataset ds --vocab v1 --out runs/tiny --resume
      tagstream train --config vit_b16-mae --dataset ds --out runs/mae      # labels unused
      tagstream train --config vit_b16-swag --dataset ds --vocab v1 --out runs/vit --init runs/mae/step-000010000.pt
      tagstream train --config tiny-cpu --dataset ds --vocab v1 --out runs/tiny --resume \\
          --base-lr 0.05 --resume-anyway optim.base_lr
      torchrun --standalone --nproc_per_node 8 -m tagstream.tools.cli train \\
          --config resnet50 --dataset ds --vocab v1 --out runs/r50 --set run.epochs=90
    """
    from tagstream.tools.vocab.images import IMAGES_VOCAB, ensure_images_vocab
    from tagstream.train.config import load_config
    from tagstream.train.distributed import env_ranks
    from tagstream.train.loop import main

    items = [f"{OPTION_KEYS[name]}={_toml(value)}" for name, value in options.items() if value not in (None, ())]
    config = load_config(recipe, [*items, *overrides])
    if config.model.objective == "mae" and not config.data.vocab:  # label-free: every image drawn alike
        note = ensure_images_vocab(config.data.dataset, build=env_ranks()[0] == 0)
        if note:
            click.echo(note)
        config = load_config(recipe, [*items, *overrides, f"data.vocab={_toml(IMAGES_VOCAB)}"])
    summary = main(config, resume=resume, resume_anyway=resume_anyway)
    _report(summary)


def _toml(value: object) -> str:
    """An option's value as the text of a --set override (strings quoted so they stay strings)."""
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _report(summary: dict) -> None:
    from tagstream.train.distributed import env_ranks
    from tagstream.train.metrics import COUNT_KEYS

    if env_ranks()[0] != 0:
        return
    if not summary["steps_run"]:
        click.echo(
            f"the run is already at step {summary['step']}: nothing to train (raise run.steps or run.epochs to go on)"
        )
    else:
        click.echo(
            f"step {summary['step']}  loss {summary['loss']:.4f}  images/s {summary['images_per_s']:.1f} "
            f"(steady {summary['steady_images_per_s']:.1f})  data-wait {summary['data_wait']:.1%} "
            f"(steady {summary['steady_data_wait']:.1%})"
        )
    for key, value in summary.get("eval", {}).items():
        click.echo(f"eval {key}: {value:.4f}" if key not in COUNT_KEYS else f"eval {key}: {int(value)}")
    click.echo(f"checkpoint: {summary['checkpoint']}")
