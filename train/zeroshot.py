"""Zero-shot transfer through the hashtag head (SWAG's protocol): no downstream training, the pretrained classifier's
hashtag probabilities read for the hashtags each downstream class maps to.

The map (downstream class -> hashtag class ids) is built on the tools side with the vocabulary's own synonyms and
WordNet machinery (tools/vocab/classmap.py) and passed in: train/ never reads vocabulary-building inputs.

Score of class c on image x, H(c) its hashtags, p the head's softmax, pi the hashtag prior:
    s_c(x) = log sum_{h in H(c)} p(h | x)  -  alpha * log sum_{h in H(c)} pi(h)
The prior correction (ours; SWAG fitted a Platt-style calibration): the head learnt the sampled hashtag
frequencies, so a frequent hashtag wins every close call; dividing by pi, the head's mean prediction over the
images scored (the --train images when given, else the evaluation images themselves, their labels unused),
turns p(h | x) into a likelihood ratio. alpha = 1 by default; with --train it is the only thing fitted: the value
of ALPHAS with the best train top-1. An unmapped class scores UNMAPPED: never predicted, its images count as misses.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from tagstream.loader.data import Dataset, Vocab
from tagstream.train.features import Labels, make_labels, vocab_labels
from tagstream.train.transfer import BASELINES, DEVICES, WEIGHTS, dataset_logits, load_backbone, score
from tagstream.train.transfer_report import strict_json

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
UNMAPPED = -1.0e30


@dataclass(frozen=True)
class ZeroShotConfig:
    checkpoint: str
    eval: str
    class_map: dict[str, tuple[int, ...]] = field(default_factory=dict)  # downstream class -> hashtag class ids
    train: str | None = None  # fits alpha only
    vocab: str = "labels"  # the downstream datasets' label vocabulary
    baseline: str = "none"  # "random": also a random-initialised model (head included): the floor
    image_size: int | None = None
    batch_size: int = 64
    workers: int = 1
    threads: int = 2
    device: str = "auto"
    weights: str = "model"
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("baseline", self.baseline, BASELINES),
            ("device", self.device, DEVICES),
            ("weights", self.weights, WEIGHTS),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {allowed}")
        if not self.class_map:
            raise ValueError("zero-shot needs a class map (downstream class -> hashtag class ids)")


def class_scores(
    probs: NDArray[np.floating], groups: list[tuple[int, ...]], prior: NDArray[np.floating], alpha: float
) -> NDArray[np.float64]:
    """(n, classes) scores s_c (module docstring) from the head's probabilities (n, hashtags)."""
    out = np.full((probs.shape[0], len(groups)), UNMAPPED, np.float64)
    tiny = np.finfo(np.float64).tiny
    for c, ids in enumerate(groups):
        if ids:
            ids_ = list(ids)
            mass = probs[:, ids_].astype(np.float64).sum(axis=1)
            out[:, c] = np.log(np.maximum(mass, tiny)) - alpha * math.log(max(float(prior[ids_].sum()), tiny))
    return out


def _probs(net: torch.nn.Module, cfg: ZeroShotConfig, dataset: str, size: int, device: torch.device):
    logits, idx = dataset_logits(net, cfg, dataset, size, device)
    return torch.from_numpy(logits).double().softmax(dim=1).numpy(), idx


def _labels(dataset: str, vocab: str, names: tuple[str, ...]) -> Labels:
    return make_labels(vocab_labels(Vocab(Dataset(dataset), vocab), names), names, task="single")


def _top1(scores: NDArray, labels: Labels, idx: NDArray[np.int64]) -> float:
    keep = labels.labelled[idx]
    return float((scores[keep].argmax(axis=1) == labels.single[idx[keep]]).mean()) if keep.any() else math.nan


def zero_shot(net, cfg: ZeroShotConfig, names: tuple[str, ...], size: int, device: torch.device) -> dict:
    """Scores of one model on the eval images (the prior and, with cfg.train, alpha from the train images)."""
    groups = [tuple(cfg.class_map.get(n, ())) for n in names]
    eval_labels = _labels(cfg.eval, cfg.vocab, names)
    p_eval, i_eval = _probs(net, cfg, cfg.eval, size, device)
    alpha, prior_from, fit = 1.0, "eval images (labels unused)", {}
    prior = p_eval.mean(axis=0)
    if cfg.train is not None:
        train_labels = _labels(cfg.train, cfg.vocab, names)
        p_train, i_train = _probs(net, cfg, cfg.train, size, device)
        prior, prior_from = p_train.mean(axis=0), "train images"
        fit = {a: _top1(class_scores(p_train, groups, prior, a), train_labels, i_train) for a in ALPHAS}
        alpha = max(ALPHAS, key=lambda a: (fit[a], -abs(a - 1.0)))  # ties: the value nearest full correction
    scores = class_scores(p_eval, groups, prior, alpha)
    out = score(scores, eval_labels, i_eval)
    mapped = np.array([bool(g) for g in groups])
    keep = eval_labels.labelled[i_eval] & mapped[np.maximum(eval_labels.single[i_eval], 0)]
    out.update(
        alpha=alpha,
        prior_from=prior_from,
        alpha_fit_train_top1={str(a): v for a, v in fit.items()},
        top1_uncorrected=_top1(class_scores(p_eval, groups, prior, 0.0), eval_labels, i_eval),
        top1_mapped_classes=float((scores[keep].argmax(axis=1) == eval_labels.single[i_eval[keep]]).mean())
        if keep.any()
        else math.nan,
        images_mapped_classes=int(keep.sum()),
    )
    return out


def run_zeroshot(cfg: ZeroShotConfig, *, mapping: dict | None = None, out: str | Path | None = None) -> dict:
    """Zero-shot top-1/top-5 of the checkpoint's hashtag head (and of a random-init model with baseline="random");
    `mapping`: the class map's summary, copied into the report. Written to `out` when given."""
    from tagstream.loader.data import write_json_atomic

    device = torch.device(
        "cuda" if cfg.device == "auto" and torch.cuda.is_available() else "cpu" if cfg.device == "auto" else cfg.device
    )
    names = tuple(Vocab(Dataset(cfg.eval), cfg.vocab).class_names())
    results, info = {}, {}
    for name, random_init in [("pretrained", False)] + ([("random", True)] if cfg.baseline == "random" else []):
        start = time.perf_counter()
        net, info = load_backbone(
            cfg.checkpoint, image_size=cfg.image_size, seed=cfg.seed, random_init=random_init, weights=cfg.weights
        )
        if info["head_classes"] == 0:
            raise ValueError(
                f"{cfg.checkpoint}: an MAE encoder has no hashtag head; zero-shot needs a hashtag run's checkpoint"
            )
        bad = sorted({h for ids in cfg.class_map.values() for h in ids if not 0 <= h < info["head_classes"]})
        if bad:
            raise ValueError(
                f"class map names hashtag classes {bad[:5]} outside the head's {info['head_classes']} classes"
            )
        results[name] = zero_shot(net.to(device), cfg, names, info["image_size"], device)
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
    report = {
        "mode": "zeroshot",
        "task": "single",
        "model": info["model"],
        "image_size": info["image_size"],
        "classes": list(names),
        "mapping": mapping or {"mapped": sum(bool(cfg.class_map.get(n)) for n in names), "classes": len(names)},
        "results": results,
        "config": {k: v for k, v in asdict(cfg).items() if k != "class_map"},
    }
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(out), strict_json(report))
    return report


def format_zeroshot(report: dict) -> str:
    """A few lines: the mapping and, per model, top-1/top-5 with the prior correction used."""
    m = report["mapping"]
    lines = [
        f"zero-shot through the hashtag head, model {report['model']}: {m['mapped']} of {m['classes']} classes mapped"
    ]
    if m.get("unmapped"):
        lines.append("unmapped (never predicted): " + ", ".join(m["unmapped"]))
    for name, r in report["results"].items():
        lines.append(
            f"{name:<11} top-1 {100 * r['top1']:.2f}%  top-5 {100 * r['top5']:.2f}%  (mapped classes only: "
            f"{100 * r['top1_mapped_classes']:.2f}%; no prior correction: {100 * r['top1_uncorrected']:.2f}%; "
            f"alpha {r['alpha']}, prior from {r['prior_from']})  {r['images']} images"
        )
    return "\n".join(lines)
