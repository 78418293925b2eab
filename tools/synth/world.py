"""Make a synthetic "hashtag world": JPEG photos of drawn concepts with Zipf-like, noisy hashtags
(hashtags.jsonl), a synonym list and stoplist for the vocab step, a clean labelled downstream split,
and world.json with the ground truth. Every image is a pure function of (seed, its index), so the
output is byte-identical for a seed whatever the number of workers."""

from __future__ import annotations

import json
import multiprocessing
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tagstream.tools.synth.concepts import CONCEPTS, NONVISUAL, Concept, junk_tags
from tagstream.tools.synth.draw import render
from tagstream.tools.synth.odd import CORRUPT_KINDS, ODD_KINDS, corrupt_line, save_jpeg, write_corrupt, write_odd
from tagstream.tools.synth.tags import TagModel, draw_tokens, write_line, zipf_probs
from tagstream.tools.synth.tars import write_tars

WORLD_FORMAT = "tagstream-synth-world"
WORLD_VERSION = 1
JSONL = "hashtags.jsonl"
WORLD = "world.json"
SYNONYMS = "synonyms.tsv"
SPELLING = "synonyms_spelling.tsv"
STOPLIST = "stoplist.txt"

_BY_NAME = {c.name: c for c in CONCEPTS}
# random streams: one per purpose, so e.g. adding --odd files never changes the regular images
_PLAN, _PRETRAIN, _DOWNSTREAM, _ODD, _CORRUPT = range(5)


@dataclass(frozen=True)
class WorldConfig:
    """Every setting of a synthetic world; validated at construction, saved in world.json."""

    images: int = 3000
    seed: int = 0
    min_side: int = 192
    max_side: int = 320
    zipf: float = 1.3  # exponent of the concept frequency distribution over rank
    second_concept: float = 0.25  # chance an image shows a second concept
    caption_fraction: float = 0.15  # lines with a caption (hashtags in text) instead of a tag list
    downstream_classes: int = 24
    downstream_train: int = 30
    downstream_eval: int = 20
    junk_tags: int = 300
    quality: int = 90
    odd: bool = False
    corrupt: int = 0
    tags: TagModel = field(default_factory=TagModel)

    def __post_init__(self) -> None:
        ints = {
            "images": (1, None),
            "seed": (0, None),
            "min_side": (16, None),
            "downstream_classes": (0, len(CONCEPTS)),
            "downstream_train": (0, None),
            "downstream_eval": (0, None),
            "junk_tags": (1, None),
            "quality": (1, 100),
            "corrupt": (0, None),
        }
        for name, (lo, hi) in ints.items():
            v = getattr(self, name)
            if not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                raise ValueError(
                    f"WorldConfig.{name} = {v!r}: must be an integer in [{lo}, {hi if hi is not None else 'inf'}]"
                )
        if self.max_side < self.min_side:
            raise ValueError(f"WorldConfig.max_side = {self.max_side!r}: must be >= min_side = {self.min_side}")
        if self.zipf < 0:
            raise ValueError(f"WorldConfig.zipf = {self.zipf!r}: must be >= 0")
        for name in ("second_concept", "caption_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"WorldConfig.{name} = {getattr(self, name)!r}: must be a probability in [0, 1]")


@dataclass(frozen=True)
class WorldSummary:
    """What make_world wrote, for the command to print (also saved in world.json, less out and seconds)."""

    out: Path
    images: int  # lines in hashtags.jsonl that name a good image (regular and odd)
    odd: int
    corrupt: int
    downstream_classes: tuple[str, ...]
    downstream_images: int
    distinct_tags: int  # canonical tags over all lines
    tags_per_image: float
    untagged_images: int
    concept_images: dict[str, int]  # true concept -> pretraining images showing it, by frequency rank
    seconds: float

    def lines(self) -> list[str]:
        counts = list(self.concept_images.items())
        head = ", ".join(f"{k} {v}" for k, v in counts[:3])
        tail = ", ".join(f"{k} {v}" for k, v in counts[-3:])
        return [
            f"wrote {self.out}",
            f"  pretraining images: {self.images} ({self.odd} odd formats) + {self.corrupt} broken entries",
            f"  tags: {self.distinct_tags} distinct, {self.tags_per_image:.2f} per image, {self.untagged_images} images untagged",
            f"  concepts: {len(counts)}; most frequent {head}; rarest {tail}",
            f"  downstream: {len(self.downstream_classes)} classes, {self.downstream_images} images",
            f"  took {self.seconds:.1f} s",
        ]


def downstream_concepts(n: int) -> list[Concept]:
    """n concepts spread evenly over the frequency ranks, so the split holds frequent and rare classes."""
    idx = np.unique(np.round(np.linspace(0, len(CONCEPTS) - 1, n)).astype(int)) if n else []
    return [CONCEPTS[i] for i in idx]


def _pick_concepts(
    rng: np.random.Generator, cfg: WorldConfig, p: np.ndarray, obj_idx: np.ndarray, obj_p: np.ndarray
) -> list[Concept]:
    first = CONCEPTS[int(rng.choice(len(CONCEPTS), p=p))]
    out = [first]
    if rng.random() < cfg.second_concept:
        second = CONCEPTS[int(obj_idx[rng.choice(len(obj_idx), p=obj_p)])]
        if second.name != first.name:
            out.append(second)
    return out


def _size(rng: np.random.Generator, cfg: WorldConfig) -> tuple[int, int]:
    w, h = rng.integers(cfg.min_side, cfg.max_side + 1, 2)
    return int(w), int(h)


@dataclass(frozen=True)
class Task:
    """One file to draw: `path` relative to the world folder; `key` seeds its own random stream."""

    path: str
    concepts: tuple[str, ...]
    width: int
    height: int
    key: tuple[int, ...]
    kind: str  # "jpeg", an ODD_KINDS key, or a CORRUPT_KINDS key


@dataclass(frozen=True)
class WorldPlan:
    """Everything about a world except its pixels: a pure function of the config, cheap to compute."""

    config: WorldConfig
    lines: list[str]  # hashtags.jsonl, in order
    records: list[dict]  # ground truth of each regular image
    odd: list[dict]
    corrupt: list[dict]
    tasks: list[Task]
    junk: list[str]
    downstream: list[Concept]


def plan_world(cfg: WorldConfig) -> WorldPlan:
    """Draw every image's concepts, size and tags, and the jsonl lines, from the seed (no I/O, no pixels)."""
    rng = np.random.default_rng([cfg.seed, _PLAN])
    p = zipf_probs(len(CONCEPTS), cfg.zipf)
    obj_idx = np.array([i for i, c in enumerate(CONCEPTS) if c.kind == "object"])
    obj_p = p[obj_idx] / p[obj_idx].sum()
    junk = junk_tags(rng, cfg.junk_tags)
    tag_kw = dict(
        model=cfg.tags,
        all_concepts=CONCEPTS,
        concept_p=p,
        junk=junk,
        nonvisual_p=zipf_probs(len(NONVISUAL), 1.0),
        junk_p=zipf_probs(len(junk), 0.7),
    )
    tasks: list[Task] = []
    entries: list[tuple[str, dict]] = []  # (jsonl line, ground truth record), in file order

    def add_image(rel: str, kind: str, key: tuple[int, ...]) -> dict:
        concepts = _pick_concepts(rng, cfg, p, obj_idx, obj_p)
        if kind != "jpeg":  # odd formats show a single concept, drawn like any other
            concepts = concepts[:1]
        width, height = _size(rng, cfg)
        tokens = draw_tokens(concepts, rng, **tag_kw)
        caption = bool(rng.random() < cfg.caption_fraction)
        line = write_line(rel, tokens, rng, caption=caption, model=cfg.tags)
        names = tuple(c.name for c in concepts)
        tasks.append(Task(rel, names, width, height, key, kind))
        rec = {
            "image": rel,
            "concepts": list(names),
            "tags": tokens,
            "caption": caption,
            "format": kind,
            "width": width,
            "height": height,
        }
        entries.append((json.dumps(line, ensure_ascii=False), rec))
        return rec

    records = [add_image(f"images/{i:06d}.jpg", "jpeg", (cfg.seed, _PRETRAIN, i)) for i in range(cfg.images)]
    odd = (
        [
            add_image(f"images/odd_{kind}.{ext}", kind, (cfg.seed, _ODD, k))
            for k, (kind, ext) in enumerate(ODD_KINDS.items())
        ]
        if cfg.odd
        else []
    )
    corrupt = []
    crng = np.random.default_rng([cfg.seed, _CORRUPT])
    for k in range(cfg.corrupt):
        kind = CORRUPT_KINDS[k % len(CORRUPT_KINDS)]
        rel = f"images/bad_{k:03d}_{kind}.jpg"
        tasks.append(Task(rel, (CONCEPTS[0].name,), 256, 256, (cfg.seed, _CORRUPT, k), kind))
        rec = {"image": rel, "kind": kind}
        entries.insert(int(crng.integers(0, len(entries) + 1)), (corrupt_line(kind, rel), rec))
        corrupt.append(rec)
    for n, (_, rec) in enumerate(entries):
        rec["line"] = n + 1

    ds = downstream_concepts(cfg.downstream_classes)
    for ci, c in enumerate(ds):
        for split, count, stream in (("train", cfg.downstream_train, 0), ("eval", cfg.downstream_eval, 1)):
            for j in range(count):
                w, h = _size(np.random.default_rng([cfg.seed, _DOWNSTREAM, ci, stream, j, 1]), cfg)
                tasks.append(
                    Task(
                        f"downstream/{split}/{c.name}/{c.name}_{j:04d}.jpg",
                        (c.name,),
                        w,
                        h,
                        (cfg.seed, _DOWNSTREAM, ci, stream, j),
                        "jpeg",
                    )
                )
    return WorldPlan(cfg, [line for line, _ in entries], records, odd, corrupt, tasks, junk, ds)


def _draw(job: tuple[Path, Task, int]) -> None:
    """Worker: draw one file from its own seed and write it (JPEG, odd format, or broken entry)."""
    out, task, quality = job
    path = out / task.path
    if task.kind in ("zero_byte", "not_an_image", "missing_file"):
        write_corrupt(task.kind, np.zeros((1, 1, 3), np.uint8), path)
        return
    rng = np.random.default_rng(task.key)
    pixels = render([_BY_NAME[n] for n in task.concepts], rng, width=task.width, height=task.height)
    if task.kind == "jpeg":
        save_jpeg(Image.fromarray(pixels), path, quality=quality)
    elif task.kind in ODD_KINDS:
        write_odd(task.kind, pixels, path, quality=quality)
    else:
        write_corrupt(task.kind, pixels, path)


def make_world(
    out: Path | str,
    *,
    images: int = 3000,
    seed: int = 0,
    odd: bool = False,
    corrupt: int = 0,
    workers: int = 1,
    config: WorldConfig | None = None,
    tar_samples: int | None = None,
) -> WorldSummary:
    """Write a synthetic hashtag world into `out` (created; must be empty if it exists).

    `config`, when given, holds every generation setting and the images/seed/odd/corrupt keywords are ignored.
    `tar_samples`, when given, also writes the world as WebDataset tars of that many samples (tools/synth/tars.py)."""
    t0 = time.perf_counter()
    cfg = config or WorldConfig(images=images, seed=seed, odd=odd, corrupt=corrupt)
    if workers < 1:
        raise ValueError(f"workers = {workers!r}: must be >= 1")
    if tar_samples is not None and (not isinstance(tar_samples, int) or tar_samples < 1):
        raise ValueError(f"tar_samples = {tar_samples!r}: must be a positive integer (samples per tar)")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(
            f"{out}: exists and is not empty; synth writes a fresh world into an empty or new folder "
            "(delete it to make the world again)"
        )
    plan = plan_world(cfg)
    for d in sorted({(out / t.path).parent for t in plan.tasks} | {out}):
        d.mkdir(parents=True, exist_ok=True)
    _run([(out, t, cfg.quality) for t in plan.tasks], workers)
    (out / JSONL).write_text("\n".join(plan.lines) + "\n", encoding="utf-8")
    if tar_samples is not None:
        write_tars(out, plan.lines, tar_samples)
    write_vocab_files(out)
    summary = _summarize(out, plan, t0)
    _write_world(out, plan, summary)
    return summary


def _run(jobs: list[tuple[Path, Task, int]], workers: int) -> None:
    if workers == 1 or len(jobs) < 2 * workers:
        for job in jobs:
            _draw(job)
        return
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        for _ in pool.imap_unordered(_draw, jobs, chunksize=16):
            pass


def write_vocab_files(out: Path) -> None:
    """The synonym lists (all spellings; spelling variants only) and the stoplist of non-visual tags into `out`."""
    with open(out / SYNONYMS, "w", encoding="utf-8") as f, open(out / SPELLING, "w", encoding="utf-8") as g:
        for c in CONCEPTS:
            f.write("\t".join(c.spellings()) + "\n")
            g.write("\t".join((c.name, *c.variants)) + "\n")
    (out / STOPLIST).write_text("\n".join(NONVISUAL) + "\n", encoding="utf-8")


def _summarize(out: Path, plan: WorldPlan, t0: float) -> WorldSummary:
    cfg, every = plan.config, plan.records + plan.odd
    tag_counts = Counter(t for r in every for t in r["tags"])
    shown = Counter(n for r in plan.records for n in r["concepts"])
    return WorldSummary(
        out=out,
        images=len(every),
        odd=len(plan.odd),
        corrupt=len(plan.corrupt),
        downstream_classes=tuple(c.name for c in plan.downstream),
        downstream_images=len(plan.downstream) * (cfg.downstream_train + cfg.downstream_eval),
        distinct_tags=len(tag_counts),
        tags_per_image=sum(tag_counts.values()) / max(len(every), 1),
        untagged_images=sum(1 for r in every if not r["tags"]),
        concept_images={c.name: shown.get(c.name, 0) for c in CONCEPTS},
        seconds=time.perf_counter() - t0,
    )


def _write_world(out: Path, plan: WorldPlan, summary: WorldSummary) -> None:
    cfg = plan.config
    shown = Counter(n for r in plan.records for n in r["concepts"])
    tagged = Counter(n for r in plan.records for n in r["concepts"] if set(r["tags"]) & set(_BY_NAME[n].spellings()))
    down = {c.name for c in plan.downstream}
    world = {
        "format": WORLD_FORMAT,
        "version": WORLD_VERSION,
        "config": asdict(cfg),
        "concepts": [
            {
                "name": c.name,
                "rank": r,
                "kind": c.kind,
                "wordnet_synset": f"n{c.synset}",
                "synonyms": list(c.synonyms),
                "variants": list(c.variants),
                "shape": c.shape,
                "colour": c.colour,
                "pattern": c.pattern,
                "images": shown.get(c.name, 0),
                "tagged_images": tagged.get(c.name, 0),
                "downstream": c.name in down,
            }
            for r, c in enumerate(CONCEPTS)
        ],
        "nonvisual_tags": list(NONVISUAL),
        "junk_tags": plan.junk,
        "downstream": {
            "classes": sorted(down, key=[c.name for c in CONCEPTS].index),
            "train_per_class": cfg.downstream_train,
            "eval_per_class": cfg.downstream_eval,
            "layout": "downstream/{train,eval}/<class>/<class>_NNNN.jpg",
        },
        "images": plan.records,
        "odd": plan.odd,
        "corrupt": plan.corrupt,
        "summary": {k: v for k, v in asdict(summary).items() if k not in ("out", "seconds")},
    }
    (out / WORLD).write_text(json.dumps(world, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
