"""The end-to-end demo on the built-in synthetic hashtag world: generate -> convert -> vocabulary ->
pretrain with natural and with square-root sampling -> linear-probe transfer against a random-init
baseline -> results table (JSON + Markdown) and plots. Every stage calls the library the CLI uses;
the trade-off is a world small enough for 2 CPU cores, so one run's differences carry sampling noise,
which the table states as a standard error rather than hiding.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from tagstream.tools.demo.results import ROWS, format_results

RUNS = ("natural", "sqrt")
VOCAB_FILTERS = ("wordnet", "none")
WORDNET_DIR = "/usr/share/wordnet"
MARKER = ".tagstream-demo"  # written first into a demo's folder: only such a folder is ever overwritten


@dataclass(frozen=True)
class DemoSize:
    """How big each stage is. steps and batch are the same for both pretraining runs."""

    images: int  # pretraining images in the synthetic world
    downstream_classes: int
    downstream_train: int  # labelled images per class
    downstream_eval: int
    min_side: int  # generated photo size range (pixels)
    max_side: int
    image_size: int  # training and probe input size
    steps: int  # optimizer steps of each pretraining run
    batch_size: int
    min_count: int  # vocabulary: drop hashtag classes on fewer images
    shots: tuple[int, ...]  # low-shot probes: labelled images per class (each at most downstream_train)
    vit_steps: int = 200  # the tiny ViT's hashtag stage, with and without the MAE stage before it
    mae_steps: int = 200  # the tiny ViT's MAE stage
    vit_seeds: tuple[int, ...] = (0, 1)  # seeds of the MAE comparison (added to the demo's seed)


SIZES: dict[str, DemoSize] = {
    "tiny": DemoSize(240, 6, 8, 6, 64, 96, 32, 12, 16, 3, (1, 5), vit_steps=6, mae_steps=6, vit_seeds=(0,)),
    "small": DemoSize(1500, 12, 20, 12, 128, 192, 48, 150, 32, 3, (1, 5, 10), vit_steps=60, mae_steps=60),
    "full": DemoSize(4000, 24, 30, 20, 160, 256, 64, 600, 64, 3, (1, 5, 10, 25)),
}
SHOT_SEEDS = 5


class _Clock:
    def __init__(self, echo: Callable[[str], None]):
        self.seconds: dict[str, float] = {}
        self.echo = echo

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.echo(f"== {name}")
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 1)
        self.echo(f"   {name}: {self.seconds[name]:.1f} s")


def frequency_groups(world: dict, classes: list[str]) -> dict[str, list[str]]:
    """Split downstream classes by pretraining hashtag frequency (world.json's tagged_images: images
    showing the concept and carrying one of its spellings): the less frequent half is "rare", the more
    frequent half "frequent"; with an odd count the median class is in neither."""
    freq = {c["name"]: int(c["tagged_images"]) for c in world["concepts"]}
    ordered = sorted(classes, key=lambda n: (freq[n], n))
    half = len(ordered) // 2
    return {"rare": ordered[:half], "frequent": ordered[len(ordered) - half :]}


def group_accuracy(per_class: dict[str, float], names: list[str], per_class_images: int) -> tuple[float, float]:
    """(mean top-1 over the group's classes, binomial standard error over its eval images)."""
    acc = [per_class[n] for n in names if per_class.get(n) is not None and math.isfinite(per_class[n])]
    if not acc:
        return math.nan, math.nan
    p = float(np.mean(acc))
    return p, math.sqrt(max(p * (1 - p), 1e-12) / (len(acc) * per_class_images))


def wordnet_keep_list(dataset: Path, wordnet_dir: str, path: Path) -> int:
    """Write the raw tags that WordNet 3.0 knows as nouns (the paper's vocabulary: hashtags that map to a
    WordNet synset) one per line; returns how many. A merged class survives `--keep` when any member is listed."""
    from tagstream.loader.data import Dataset
    from tagstream.tools.vocab.wordnet import WordNet

    wn = WordNet(wordnet_dir)
    known = [text for _, text, _ in Dataset(dataset).tags if wn.lookup(text) is not None]
    path.write_text("".join(f"{t}\n" for t in known), encoding="utf-8")
    return len(known)


def _pretrain(root: Path, ds: Path, sampling: str, size: DemoSize, seed: int, progress: bool) -> dict:
    from tagstream.train.config import load_config
    from tagstream.train.loop import main

    config = load_config(
        "tiny-cpu",
        [
            f"data.dataset={json.dumps(str(ds))}",
            'data.vocab="tags"',
            f'data.sampling="{sampling}"',
            f"data.image_size={size.image_size}",
            f"batch.global_size={size.batch_size}",
            f"run.steps={size.steps}",
            f"run.out_dir={json.dumps(str(root / 'runs' / sampling))}",
            f"run.seed={seed}",
            f"run.progress={str(progress).lower()}",
            f"run.checkpoint_every={size.steps}",
            "run.log_every=5",
            # one compute thread leaves the second core to the loader's decoding; two threads contending
            # with DALI on 2 cores were slower per step than one (docs/costs.md)
            "run.threads=1",
        ],
    )
    return main(config)


def _losses(run_dir: Path) -> tuple[list[int], list[float]]:
    from tagstream.train.rundir import step_losses

    recorded = step_losses(run_dir)
    return list(recorded), list(recorded.values())


def plot_losses(runs: dict[str, Path], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, run_dir in runs.items():
        steps, losses = _losses(run_dir)
        ax.plot(steps, losses, alpha=0.35, lw=0.8)
        k = max(1, len(losses) // 30)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, lw=2, color=ax.lines[-1].get_color(), label=f"{name} sampling")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (soft-target cross-entropy)")
    ax.set_title("pretraining loss; each run is scored on its own sampled batches")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_per_class(results: dict, freq: dict[str, int], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in ROWS:
        per = results[key]["per_class_accuracy"]
        names = sorted(per, key=lambda n: freq[n])
        ax.plot([max(freq[n], 1) for n in names], [per[n] for n in names], "o", ms=5, alpha=0.8, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("pretraining images tagged with the class (world.json tagged_images)")
    ax.set_ylabel("linear-probe top-1 on the class")
    ax.set_title("downstream accuracy per class vs its hashtag frequency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_demo(
    out: str | Path,
    *,
    size: str = "full",
    seed: int = 0,
    workers: int = 2,
    vocab_filter: str = "wordnet",
    wordnet_dir: str = WORDNET_DIR,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run every stage into `out` (new or empty); returns the results also written to out/results.json.

    vocab_filter "wordnet": like the paper, keep only classes with a member WordNet knows as a noun
    (made-up tags drop out); used when WordNet's files are in wordnet_dir, else the run says so and
    falls back to "none" (synonyms merged, stop-tags dropped, min-count only). overwrite=True first
    deletes `out` if an earlier demo made it (it holds the marker file); any other non-empty folder is refused."""
    from tagstream.loader.data import write_json_atomic
    from tagstream.tools.convert.engine import convert
    from tagstream.tools.demo.successors import mae_comparison, zero_shot_rows
    from tagstream.tools.inspection.sampling import plot_sampling, sampling_report
    from tagstream.tools.synth.world import WorldConfig, make_world
    from tagstream.tools.vocab.build import VocabOptions, build_vocab
    from tagstream.train.lowshot import LowShotConfig
    from tagstream.train.transfer import TransferConfig, run_transfer
    from tagstream.train.transfer_report import strict_json

    if size not in SIZES:
        raise ValueError(f"size={size!r} is not one of {tuple(SIZES)}")
    if vocab_filter not in VOCAB_FILTERS:
        raise ValueError(f"vocab_filter={vocab_filter!r} is not one of {VOCAB_FILTERS}")
    s = SIZES[size]
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        if not (overwrite and (root / MARKER).is_file()):
            raise ValueError(
                f"{root} exists and is not empty; the demo writes into a new or empty folder"
                + (" (it replaces only a folder an earlier demo wrote)" if overwrite else "")
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("written by tagstream demo; `tagstream demo --overwrite` may delete this folder\n")
    clock = _Clock(echo)
    start = time.perf_counter()
    world_dir, ds = root / "world", root / "hashtags"
    down = {split: root / f"downstream-{split}" for split in ("train", "eval")}

    with clock.stage("generate"):
        wcfg = WorldConfig(
            images=s.images,
            seed=seed,
            min_side=s.min_side,
            max_side=s.max_side,
            downstream_classes=s.downstream_classes,
            downstream_train=s.downstream_train,
            downstream_eval=s.downstream_eval,
        )
        summary = make_world(world_dir, config=wcfg, workers=workers)
        echo(
            f"   {summary.images} hashtag images, {summary.distinct_tags} distinct tags, "
            f"{len(summary.downstream_classes)} downstream classes x {s.downstream_train}+{s.downstream_eval} images"
        )
    with clock.stage("convert"):
        conv = convert(world_dir / "hashtags.jsonl", ds, workers=workers, progress=progress)
        for split, path in down.items():
            convert(world_dir / "downstream" / split, path, format="imagefolder", workers=workers)
        echo(f"   {conv.images} images in {conv.shards} shards, {sum(conv.rejected.values())} rejected")
    with clock.stage("vocabulary"):
        keep = None
        if vocab_filter == "wordnet" and not (Path(wordnet_dir) / "index.noun").is_file():
            echo(f"   WordNet not found in {wordnet_dir}: vocabulary not restricted to WordNet nouns")
            vocab_filter = "none"
        if vocab_filter == "wordnet":
            keep = root / "wordnet_keep.txt"
            echo(f"   {wordnet_keep_list(ds, wordnet_dir, keep)} raw tags are WordNet nouns (keep list)")
        vocab = build_vocab(
            ds,
            "tags",
            VocabOptions(
                synonyms=str(world_dir / "synonyms.tsv"),
                stoplist=str(world_dir / "stoplist.txt"),
                keep=str(keep) if keep else None,
                min_count=s.min_count,
            ),
        )
        for path in down.values():
            build_vocab(path, "labels", VocabOptions())
        echo(
            f"   {vocab.report.get('classes', '?')} classes after merging synonyms, dropping stop-tags and filtering ({vocab_filter})"
        )
        report = {k: sampling_report(ds, "tags", sampling=k) for k in RUNS}
        plot_sampling(report["sqrt"], root / "tag_distribution.png")
    pretrain = {}
    for sampling in RUNS:
        with clock.stage(f"pretrain {sampling}"):
            pretrain[sampling] = _pretrain(root, ds, sampling, s, seed, progress)
    results = {}
    with clock.stage("transfer"):
        for sampling in RUNS:
            cfg = TransferConfig(
                train=str(down["train"]),
                eval=str(down["eval"]),
                checkpoint=pretrain[sampling]["checkpoint"],
                baseline="random" if sampling == "natural" else "none",
                workers=min(workers, 1),
                seed=seed,
                batch_size=64,
                progress=progress,
                low_shot=LowShotConfig(shots=s.shots, seeds=SHOT_SEEDS),
            )
            rep = run_transfer(cfg, out=root / f"transfer-{sampling}.json")
            results[sampling] = rep["results"]["pretrained"]
            if "random" in rep["results"]:
                results["random"] = rep["results"]["random"]
    with clock.stage("zero-shot"):
        zero_shot = zero_shot_rows(
            pretrain["sqrt"]["checkpoint"], down["eval"], wordnet_dir=wordnet_dir, seed=seed, out=root / "zeroshot.json"
        )
    mae = mae_comparison(
        root,
        ds,
        down,
        seeds=tuple(seed + k for k in s.vit_seeds),
        mae_steps=s.mae_steps,
        steps=s.vit_steps,
        image_size=s.image_size,
        shots=s.shots,
        shot_seeds=SHOT_SEEDS,
        progress=progress,
        clock=clock.stage,
    )
    world = json.loads((world_dir / "world.json").read_text())
    groups = frequency_groups(world, list(results["random"]["per_class_accuracy"]))
    freq = {c["name"]: int(c["tagged_images"]) for c in world["concepts"]}
    plot_losses({k: root / "runs" / k for k in RUNS}, root / "loss_curves.png")
    plot_per_class(results, freq, root / "per_class.png")
    table = []
    for key, label in ROWS:
        r = results[key]
        row = {"backbone": label, "top1": r["top1"], "top5": r["top5"], "top1_se": _se(r["top1"], r["images"])}
        for g, names in groups.items():
            row[f"top1_{g}"], row[f"top1_{g}_se"] = group_accuracy(r["per_class_accuracy"], names, s.downstream_eval)
        row["hashtag_p1"] = pretrain[key]["eval"].get("precision@1") if key in pretrain else None
        row["pretrain_seconds"] = clock.seconds.get(f"pretrain {key}")
        table.append(row)
    total = round(time.perf_counter() - start, 1)
    out_json = {
        "size": size,
        "settings": asdict(s),
        "seed": seed,
        "vocab_filter": vocab_filter,
        "vocab_classes": vocab.report.get("classes"),
        "table": table,
        "groups": groups,
        "group_rule": "downstream classes sorted by world.json tagged_images; lower half rare, upper half frequent",
        "class_frequency": {n: freq[n] for n in results["random"]["per_class_accuracy"]},
        "sampled_share": {k: _share(report[k], groups) for k in RUNS},
        "concept_label_share": {k: _concept_share(report[k], world) for k in RUNS},
        "low_shot": {key: results[key]["low_shot"] for key, _ in ROWS},
        "pretrain": {
            k: {"loss": v["loss"], "eval": v["eval"], "steps": v["step"], "images_per_s": v["images_per_s"]}
            for k, v in pretrain.items()
        },
        "zero_shot": zero_shot,
        "mae": mae,
        "stage_seconds": clock.seconds,
        "total_seconds": total,
        "plots": ["tag_distribution.png", "loss_curves.png", "per_class.png"],
    }
    write_json_atomic(root / "results.json", strict_json(out_json))
    (root / "results.md").write_text(format_results(out_json), encoding="utf-8")
    echo(format_results(out_json))
    echo(outputs_note(root, out_json["plots"]))
    return out_json


def outputs_note(root: Path, plots: list[str]) -> str:
    """The closing lines: where the demo left what it made."""
    return "\n".join(
        [
            f"outputs in {root.resolve()}/",
            "  results.md, results.json   the table above and every number behind it",
            f"  {', '.join(plots)}",
            f"  runs/{{{','.join(RUNS)}}}/   the pretraining runs (checkpoints, metrics.jsonl)",
            "  hashtags/                  the converted dataset (tagstream inspect / train / dedup take it)",
        ]
    )


def _se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def _share(report, groups: dict[str, list[str]]) -> dict[str, float]:
    """Share of the draws of an epoch that carry a rare or a frequent downstream class (by class name)."""
    expected = dict(zip(report.names, np.asarray(report.expected, dtype=np.float64)))
    total = float(report.samples_per_epoch) or 1.0
    return {g: sum(expected.get(n, 0.0) for n in names) / total for g, names in groups.items()}


def _concept_share(report, world: dict) -> float:
    """Share of the expected class draws (label mass) that lands on classes naming a visual concept of
    the world rather than a junk or unmerged tag."""
    concepts = {c["name"] for c in world["concepts"]}
    expected = np.asarray(report.expected, dtype=np.float64)
    visual = np.array([n in concepts for n in report.names], dtype=bool)
    return float(expected[visual].sum() / max(expected.sum(), 1e-300))
