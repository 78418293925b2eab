"""Transfer of a pretrained backbone to a labelled task: a linear probe on frozen features (features
extracted once, centre crop) or full fine-tuning with a new head, against a random-initialised
backbone under the same protocol on request; single-label (top-1/top-5, per-class accuracy) or
multi-label (mAP) scoring. Classes are matched across the train and eval datasets by name.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from tagstream.loader import LoaderConfig, build_loader, normalize_images
from tagstream.loader.data import Dataset, Vocab
from tagstream.loader.pipeline import check_size, final_size, parse_size_schedule
from tagstream.train.checkpoint import load_checkpoint
from tagstream.train.ema import ema_weights
from tagstream.train.features import Labels, eval_config, extract_dataset, make_labels, vocab_labels
from tagstream.train.init import backbone_weights, objective_of
from tagstream.train.lowshot import LowShotConfig, low_shot
from tagstream.train.metrics import average_precision_per_class
from tagstream.train.models import adapt_state, build_model, replace_head
from tagstream.train.optim import layer_decay_groups
from tagstream.train.probe import ProbeConfig, fit_linear_probe, per_class_accuracy, topk_accuracy
from tagstream.train.transfer_report import strict_json

MODES = ("linear", "finetune")
BASELINES = ("none", "random")
TASKS = ("auto", "single", "multi")
DEVICES = ("auto", "cpu", "cuda")
WEIGHTS = ("model", "ema")


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 3
    batch_size: int = 32
    lr: float = 0.01  # SGD with momentum 0.9, cosine to zero over the run
    weight_decay: float = 1e-4
    layer_decay: float = 1.0  # < 1: each block below the head learns at layer_decay times the rate of the one above

    @classmethod
    def preset(cls, name: str, **given) -> "FinetuneConfig":
        """name "none": the given settings; "swag": SWAG's published fine-tuning recipe over them (epochs 8, batch 512,
        LR 6e-3 cosine, weight decay 0; its mixup 0.1 and EMA 1e-4 are not part of this loop), layer_decay kept."""
        if name == "swag":
            given.update(epochs=8, batch_size=512, lr=6e-3, weight_decay=0.0)
        elif name != "none":
            raise ValueError(f"fine-tuning preset {name!r} is not one of ('none', 'swag')")
        return cls(**given)

    def __post_init__(self) -> None:
        if (
            self.epochs < 1
            or self.batch_size < 1
            or self.lr <= 0
            or self.weight_decay < 0
            or not 0 < self.layer_decay <= 1
        ):
            raise ValueError(
                f"finetune settings {self} must have epochs, batch_size >= 1, lr > 0, weight_decay >= 0, "
                "0 < layer_decay <= 1"
            )


@dataclass(frozen=True)
class TransferConfig:
    """One transfer run. checkpoint None = only a random-initialised `model` (then model is required)."""

    train: str
    eval: str
    checkpoint: str | None = None
    mode: str = "linear"
    baseline: str = "none"  # "random": also run a random-initialised backbone of the same architecture
    vocab: str = "labels"  # vocabulary of the downstream datasets whose classes are the labels
    task: str = "auto"  # auto: single-label when no image carries two classes
    model: str | None = None  # architecture when there is no checkpoint
    image_size: int | None = (
        None  # default: the checkpoint's final training size; a ViT's position embedding is resized
    )
    batch_size: int = 64  # feature extraction batch
    workers: int = 1
    threads: int = 2
    device: str = "auto"
    seed: int = 0
    progress: bool = False
    weights: str = "model"  # of the checkpoint: "model", or "ema" (the moving average of a run with optim.ema)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    low_shot: LowShotConfig = field(default_factory=LowShotConfig)  # linear mode: k images per class, several seeds

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("mode", self.mode, MODES),
            ("baseline", self.baseline, BASELINES),
            ("task", self.task, TASKS),
            ("device", self.device, DEVICES),
            ("weights", self.weights, WEIGHTS),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {allowed}")
        if self.checkpoint is None and self.model is None:
            raise ValueError("give a checkpoint, or a model name for a random-initialised backbone")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        if self.image_size is not None:
            check_size(self.image_size, name="image_size")
        if self.low_shot.shots and self.mode != "linear":
            raise ValueError(
                f"low-shot evaluation (shots={self.low_shot.shots}) is a linear-probe protocol; use mode='linear'"
            )


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def load_backbone(
    checkpoint: str | None,
    *,
    model: str | None = None,
    image_size: int | None = None,
    seed: int = 0,
    random_init: bool = False,
    weights: str = "model",
) -> tuple[torch.nn.Module, dict]:
    """(model, info) from a checkpoint, or random-initialised with the checkpoint's (or given) architecture.

    weights: "model" (the trained weights) or "ema" (their moving average, train/ema.py).
    info: model name, image size, head classes, source ("checkpoint" or "random"). A ViT loaded at
    another size than it was trained at gets its position embedding resized (models.adapt_state).
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r} is not one of {WEIGHTS}")
    state = load_checkpoint(checkpoint) if checkpoint is not None else None
    name = state["model_name"] if state else model
    # the size the checkpoint's run ended at (the last entry of a progressive-resizing schedule)
    trained = final_size(parse_size_schedule(state["config"]["data"]["image_size"])) if state else 224
    size = image_size or trained
    mae = state is not None and objective_of(state) == "mae"  # an encoder without a classifier head
    classes = int(state["num_classes"]) if state and not mae else 1
    torch.manual_seed(seed)
    net = build_model(name, classes, image_size=size)
    if state is not None and not random_init:
        trained = ema_weights(state, checkpoint) if weights == "ema" else state["model"]
        found = adapt_state(name, backbone_weights({**state, "model": trained}), image_size=size)
        missing, extra = net.load_state_dict(found, strict=not mae)
        if extra or any(not k.startswith("heads.") for k in missing):
            raise ValueError(
                f"{checkpoint}: its encoder does not fit {name} (missing {missing[:3]}, extra {extra[:3]})"
            )
    source = "random" if (state is None or random_init) else "checkpoint"
    return net, {
        "model": name,
        "image_size": size,
        "head_classes": 0 if mae else classes,  # 0: no trained head (an MAE encoder)
        "source": source,
        "weights": weights if source == "checkpoint" else "random",
    }


def _loader_device(device: torch.device) -> tuple[str, int | None]:
    return ("gpu", device.index or 0) if device.type == "cuda" else ("cpu", None)


def _features(net: torch.nn.Module, cfg: TransferConfig, dataset: str, size: int, device: torch.device, desc: str):
    dev, dev_id = _loader_device(device)
    loader = build_loader(
        eval_config(
            dataset,
            cfg.vocab,
            image_size=size,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            threads=cfg.threads,
            device=dev,
            device_id=dev_id,
        ),
        0,
        1,
    )
    try:
        return extract_dataset(net, loader, device=device, progress=cfg.progress, desc=desc)
    finally:
        loader.close()


def score(scores: NDArray[np.floating], labels: Labels, indices: NDArray[np.int64]) -> dict:
    """Metrics of scores (n, C) for the images `indices` of a labelled dataset; unlabelled rows skipped."""
    keep = labels.labelled[indices]
    scores, indices = scores[keep], indices[keep]
    names = labels.class_names
    if labels.task == "single":
        y = labels.single[indices]
        per_class = per_class_accuracy(scores, y, len(names))
        return {
            "images": int(len(y)),
            "top1": topk_accuracy(scores, y, k=1),
            "top5": topk_accuracy(scores, y, k=5),
            "mean_class_accuracy": float(np.nanmean(per_class)) if np.isfinite(per_class).any() else math.nan,
            "per_class_accuracy": {n: float(a) for n, a in zip(names, per_class)},
        }
    ap = average_precision_per_class(scores, labels.multi[indices] > 0)
    m = float(np.nanmean(ap)) if np.isfinite(ap).any() else math.nan
    return {"images": int(len(indices)), "mAP": m, "per_class_ap": {n: float(a) for n, a in zip(names, ap)}}


def linear_probe(net, cfg: TransferConfig, train_labels: Labels, eval_labels: Labels, size: int, device) -> dict:
    """Extract features once for both datasets, fit the probe on train, score eval."""
    ftr, itr = _features(net, cfg, cfg.train, size, device, "train features")
    fev, iev = _features(net, cfg, cfg.eval, size, device, "eval features")
    keep = train_labels.labelled[itr]
    y = train_labels.single[itr[keep]] if train_labels.task == "single" else train_labels.multi[itr[keep]]
    probe = fit_linear_probe(
        ftr[keep], y, num_classes=len(train_labels.class_names), task=train_labels.task, config=cfg.probe
    )
    out = score(probe.scores(fev), eval_labels, iev)
    out.update(
        train_images=int(keep.sum()),
        feature_dim=int(ftr.shape[1]),
        weight_decay=probe.weight_decay,
        val_scores=probe.val_scores,
        train_top1=score(probe.scores(ftr), train_labels, itr).get("top1"),
    )
    if cfg.low_shot.shots:
        if train_labels.task != "single":
            raise ValueError(
                "low-shot evaluation needs a single-label task (k images of each class); this one is multi-label"
            )
        out["low_shot"] = low_shot(
            ftr,
            train_labels.single[itr],
            fev,
            eval_labels.single[iev],
            num_classes=len(train_labels.class_names),
            config=cfg.low_shot,
        )
    return out


def finetune(net, cfg: TransferConfig, train_labels: Labels, eval_labels: Labels, size: int, device) -> dict:
    """Replace the head, train every layer with SGD on augmented train images, score eval with the model's logits."""
    ft = cfg.finetune
    loss_kind = "soft" if train_labels.task == "single" else "multihot"
    dev, dev_id = _loader_device(device)
    lcfg = LoaderConfig(
        dataset=cfg.train,
        vocab=cfg.vocab,
        mode="train",
        sampling="natural",
        one_pass=True,  # an epoch is every train image once, in a new order (the last batch filled up)
        batch_size=ft.batch_size,
        image_size=size,
        seed=cfg.seed,
        targets=loss_kind,
        workers=cfg.workers,
        threads=cfg.threads,
        device=dev,
        device_id=dev_id,
    )
    replace_head(net, len(train_labels.class_names))
    net.to(device)
    loader = build_loader(lcfg, 0, 1)
    steps = ft.epochs * len(loader)
    opt = torch.optim.SGD(
        layer_decay_groups(net, ft.lr, ft.layer_decay), lr=ft.lr, momentum=0.9, weight_decay=ft.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    losses = []
    try:
        for epoch in range(ft.epochs):
            loader.set_epoch(epoch)
            net.train()
            for batch in loader:
                x = normalize_images(batch.images, device=device)
                t = batch.targets.to(device).float()
                logits = net(x)
                if loss_kind == "soft":
                    loss = torch.sum(-t * torch.log_softmax(logits, dim=1), dim=1).mean()
                else:
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
    finally:
        loader.close()
    logits, idx = dataset_logits(net, cfg, cfg.eval, size, device)
    out = score(logits, eval_labels, idx)
    out.update(
        steps=steps,
        first_loss=losses[0] if losses else math.nan,
        last_loss=losses[-1] if losses else math.nan,
        layer_decay=ft.layer_decay,
        learning_rates=sorted({g["initial_lr"] for g in opt.param_groups}),
    )
    return out


@torch.no_grad()
def dataset_logits(net, cfg: TransferConfig, dataset: str, size: int, device) -> tuple[np.ndarray, np.ndarray]:
    dev, dev_id = _loader_device(device)
    loader = build_loader(
        eval_config(
            dataset,
            cfg.vocab,
            image_size=size,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            threads=cfg.threads,
            device=dev,
            device_id=dev_id,
        ),
        0,
        1,
    )
    net.eval()
    out, idx = [], []
    try:
        for batch in loader:
            out.append(net(normalize_images(batch.images, device=device)).float().cpu().numpy())
            idx.append(np.asarray(batch.indices, dtype=np.int64).reshape(-1))
    finally:
        loader.close()
    return np.concatenate(out), np.concatenate(idx)


def downstream_labels(cfg: TransferConfig) -> tuple[Labels, Labels]:
    """Labels of the train and eval datasets in the train vocabulary's class space (matched by name)."""
    train_vocab = Vocab(Dataset(cfg.train), cfg.vocab)
    eval_vocab = Vocab(Dataset(cfg.eval), cfg.vocab)
    names = tuple(train_vocab.class_names())
    task = None if cfg.task == "auto" else cfg.task
    tr = make_labels(vocab_labels(train_vocab, names), names, task=task)
    ev = make_labels(vocab_labels(eval_vocab, names), names, task=task)
    if tr.task != ev.task:  # detected differently: one set has multi-class images, so both are multi-label
        tr, ev = make_labels(tr.multi, names, task="multi"), make_labels(ev.multi, names, task="multi")
    return tr, ev


def run_transfer(cfg: TransferConfig, *, out: str | Path | None = None) -> dict:
    """Run the protocol for the checkpoint (and the random baseline); returns the report (also written to `out`)."""
    from tagstream.loader.data import write_json_atomic

    device = _device(cfg.device)
    train_labels, eval_labels = downstream_labels(cfg)
    runs = []
    if cfg.checkpoint is not None:
        runs.append(("pretrained", False))
    if cfg.checkpoint is None or cfg.baseline == "random":
        runs.append(("random", True))
    results = {}
    info = {}
    for name, random_init in runs:
        start = time.perf_counter()
        net, info = load_backbone(
            cfg.checkpoint,
            model=cfg.model,
            image_size=cfg.image_size,
            seed=cfg.seed,
            random_init=random_init,
            weights=cfg.weights,
        )
        net.to(device)
        protocol = linear_probe if cfg.mode == "linear" else finetune
        results[name] = protocol(net, cfg, train_labels, eval_labels, info["image_size"], device)
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
    report = {
        "mode": cfg.mode,
        "task": train_labels.task,
        "model": info["model"],
        "image_size": info["image_size"],
        "classes": list(train_labels.class_names),
        "results": results,
        "config": {k: v for k, v in asdict(cfg).items()},
    }
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(out), strict_json(report))
    return report
