"""The demo's rows for the method's successors: zero-shot transfer through the hashtag head (SWAG), and MAE
pre-pretraining before the hashtags (MAWS) against hashtags alone on the tiny CPU ViT, several seeds.

Same protocol for every backbone of the comparison: the linear probe and low-shot probes of the main table. The
hashtag stage has the same steps with and without the MAE stage before it (MAWS's comparison: the MAE stage is
extra compute); the MAE encoder alone and a random-initialised ViT are the references below them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

VIT_ROWS = (
    ("vit_random", "ViT, random init"),
    ("vit_mae", "ViT, MAE only"),
    ("vit_hashtags", "ViT, hashtags (sqrt)"),
    ("vit_mae_hashtags", "ViT, MAE -> hashtags (sqrt)"),
)


def _train(
    recipe: str,
    ds: Path,
    out: Path,
    *,
    vocab: str,
    steps: int,
    image_size: int,
    seed: int,
    progress: bool,
    init: str = "",
) -> dict:
    from tagstream.train.config import load_config
    from tagstream.train.loop import main

    overrides = [
        f"data.dataset={json.dumps(str(ds))}",
        f"data.vocab={json.dumps(vocab)}",
        f"data.image_size={image_size}",
        f"run.steps={steps}",
        f"run.out_dir={json.dumps(str(out))}",
        f"run.seed={seed}",
        f"run.progress={str(progress).lower()}",
        f"run.checkpoint_every={steps}",
    ]
    if init:
        overrides.append(f"model.init={json.dumps(init)}")
    return main(load_config(recipe, overrides))


def zero_shot_rows(checkpoint: str, down_eval: Path, *, wordnet_dir: str, seed: int, out: Path) -> dict:
    """Zero-shot top-1/top-5 of the hashtag model and of a random-initialised one (the floor) on the labelled split."""
    from tagstream.tools.vocab.classmap import zero_shot_transfer

    wn = wordnet_dir if (Path(wordnet_dir) / "index.noun").is_file() else None
    report = zero_shot_transfer(
        checkpoint, str(down_eval), baseline="random", wordnet_dir=wn, workers=1, seed=seed, out=out
    )
    keep = ("top1", "top5", "images", "top1_mapped_classes", "top1_uncorrected", "alpha")
    return {
        "results": {k: {f: v[f] for f in keep} for k, v in report["results"].items()},
        "mapping": {k: report["mapping"][k] for k in ("mapped", "classes", "unmapped")},
        "how": sorted({h for m in report["mapping"]["how"].values() for h in m.values()}),
    }


def mae_comparison(
    root: Path,
    ds: Path,
    down: dict[str, Path],
    *,
    seeds: tuple[int, ...],
    mae_steps: int,
    steps: int,
    image_size: int,
    shots: tuple[int, ...],
    shot_seeds: int,
    progress: bool,
    clock: Callable,
) -> dict:
    """Per seed: an MAE stage (every image alike, labels unused), the hashtag stage from its encoder, the hashtag stage
    alone; all probed like the main table. Returns {row key: {"per_seed": [...], mean figures}} plus the settings."""
    from tagstream.tools.vocab.images import ensure_images_vocab
    from tagstream.train.lowshot import LowShotConfig
    from tagstream.train.transfer import TransferConfig, run_transfer

    ensure_images_vocab(ds)
    runs = root / "runs"
    per_seed: dict[str, list[dict]] = {key: [] for key, _ in VIT_ROWS}
    pretrain: dict[str, list[dict]] = {"mae": [], "vit_hashtags": [], "vit_mae_hashtags": []}
    for seed in seeds:
        with clock(f"vit seed {seed}: MAE {mae_steps} steps"):
            mae = _train(
                "tiny-vit-mae-cpu",
                ds,
                runs / f"vit-mae-s{seed}",
                vocab="images",
                steps=mae_steps,
                image_size=image_size,
                seed=seed,
                progress=progress,
            )
        with clock(f"vit seed {seed}: hashtags {steps} steps, twice"):
            alone = _train(
                "tiny-vit-cpu",
                ds,
                runs / f"vit-hashtags-s{seed}",
                vocab="tags",
                steps=steps,
                image_size=image_size,
                seed=seed,
                progress=progress,
            )
            after = _train(
                "tiny-vit-cpu",
                ds,
                runs / f"vit-mae-hashtags-s{seed}",
                vocab="tags",
                steps=steps,
                image_size=image_size,
                seed=seed,
                progress=progress,
                init=mae["checkpoint"],
            )
        for name, summary in (("mae", mae), ("vit_hashtags", alone), ("vit_mae_hashtags", after)):
            pretrain[name].append(
                {
                    "loss": summary["loss"],
                    "eval": summary["eval"],
                    "images_per_s": summary["images_per_s"],
                    "steady_images_per_s": summary.get("steady_images_per_s"),
                }
            )
        with clock(f"vit seed {seed}: probes"):
            for key, checkpoint in (("vit_mae", mae), ("vit_hashtags", alone), ("vit_mae_hashtags", after)):
                cfg = TransferConfig(
                    train=str(down["train"]),
                    eval=str(down["eval"]),
                    checkpoint=checkpoint["checkpoint"],
                    baseline="random" if key == "vit_mae" else "none",
                    workers=1,
                    seed=seed,
                    low_shot=LowShotConfig(shots=shots, seeds=shot_seeds),
                )
                rep = run_transfer(cfg, out=root / f"transfer-{key}-s{seed}.json")
                per_seed[key].append(_probe(rep["results"]["pretrained"]))
                if "random" in rep["results"]:
                    per_seed["vit_random"].append(_probe(rep["results"]["random"]))
    rows = {key: {"per_seed": per_seed[key], **_mean(per_seed[key])} for key, _ in VIT_ROWS}
    return {"seeds": list(seeds), "mae_steps": mae_steps, "steps": steps, "rows": rows, "pretrain": pretrain}


def _probe(r: dict) -> dict:
    return {"top1": r["top1"], "low_shot": {k: v["top1_mean"] for k, v in r["low_shot"].items()}}


def _mean(rows: list[dict]) -> dict:
    top1 = [r["top1"] for r in rows]
    shots = list(rows[0]["low_shot"]) if rows else []
    return {
        "top1_mean": float(np.mean(top1)),
        "top1_min": float(min(top1)),
        "top1_max": float(max(top1)),
        "low_shot_mean": {k: float(np.mean([r["low_shot"][k] for r in rows])) for k in shots},
    }
