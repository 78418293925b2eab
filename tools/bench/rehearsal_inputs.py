"""The rehearsal's inputs (stage 1): N photo-like JPEGs with hashtags as WebDataset tars in img2dataset's layout,
an evaluation set with near copies planted in the training tars, a labelled downstream split and the vocabulary
lists, made fast enough that making them is not the bottleneck at 10^6.

Drawing an image costs ~3-5 ms (tools/synth/draw.render), so only a pool of a few thousand is drawn (concepts
Zipf-distributed as in the synthetic world); each training image is a random crop, flip and brightness of a pool
image, encoded at quality 85 (~0.3 ms), with hashtags drawn for the pool image's concepts by the world's tagging
model (tools/synth/tags.py), so the tags mean something. The evaluation images are drawn fresh, never from the
pool. The trade-off: training images of one pool image are near copies of each other (which no stage relies on
being otherwise). Every file is a pure function of (seed, its position); tars are written to a temporary name and
renamed, so an interrupted run continues with the tars it lacks.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tagstream.tools.synth.concepts import CONCEPTS, NONVISUAL
from tagstream.tools.synth.draw import render
from tagstream.tools.synth.tags import TagModel, draw_tokens, write_line, zipf_probs
from tagstream.tools.synth.tars import add_member
from tagstream.tools.synth.world import WorldConfig, plan_world, write_vocab_files

SAMPLES_PER_TAR = 10_000
POOL_SIZE = (150, 200)  # (height, width) of a pool image; a training image is a 120 x 160 window of one
TRAIN_SIZE = (120, 160)
TAG_VARIANTS = 8
QUALITY = 85
EDITS = ("crop", "reencode", "border")  # the planted near copies, cycled
INPUTS = "inputs"
PLANTED = "planted.json"
_BY_NAME = {c.name: c for c in CONCEPTS}
_TRAIN_STREAM, _EVAL_SEED, _PLANT_STREAM = 11, 1000, 12


@dataclass(frozen=True)
class InputsSpec:
    """What stage 1 makes; `pool`: drawn images the training images are cut from; `planted`: evaluation images
    with a near copy in the training tars (so the training tars hold images + planted samples)."""

    images: int
    eval_images: int
    pool: int
    planted: int
    seed: int = 0
    workers: int = 2
    downstream_classes: int = 24
    downstream_train: int = 30
    downstream_eval: int = 20

    @classmethod
    def for_size(cls, images: int, eval_images: int, *, seed: int = 0, workers: int | None = None) -> InputsSpec:
        """Pool and planted counts that grow with N up to a few thousand; a smaller labelled split below 10^4."""
        small = images < 10_000
        return cls(
            images=images,
            eval_images=eval_images,
            pool=int(min(4000, max(200, images // 50))),
            planted=int(min(eval_images, max(9, eval_images // 20))),
            seed=seed,
            workers=workers or os.cpu_count() or 1,
            downstream_classes=8 if small else 24,
            downstream_train=10 if small else 30,
            downstream_eval=8 if small else 20,
        )


def paths(workdir: Path) -> dict[str, Path]:
    root = Path(workdir) / INPUTS
    return {
        "root": root,
        "train": root / "train",
        "eval": root / "eval",
        "downstream": root / "downstream",
        "copies": root / "copies",
        "pool": root / "pool.npy",
        "done": root / "inputs.json",
        "planted": Path(workdir) / PLANTED,
    }


def make_inputs(workdir: Path, spec: InputsSpec) -> dict:
    """Write every input of the rehearsal under WORKDIR/inputs/ (and WORKDIR/planted.json); returns the summary
    also saved as inputs/inputs.json, written last (its presence means stage 1 is complete)."""
    p = paths(workdir)
    if p["done"].is_file():
        return json.loads(p["done"].read_text())
    for key in ("train", "eval", "copies"):
        p[key].mkdir(parents=True, exist_ok=True)
    pool_plan = plan_world(
        WorldConfig(
            images=spec.pool,
            seed=spec.seed,
            min_side=TRAIN_SIZE[0],
            max_side=TRAIN_SIZE[1],
            downstream_classes=spec.downstream_classes,
            downstream_train=spec.downstream_train,
            downstream_eval=spec.downstream_eval,
        )
    )
    eval_plan = plan_world(
        WorldConfig(
            images=spec.eval_images,
            seed=spec.seed + _EVAL_SEED,
            min_side=TRAIN_SIZE[0],
            max_side=TRAIN_SIZE[1],
            downstream_classes=0,
        )
    )
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(spec.workers) as workers:
        pool, pool_tags = _draw_pool(p["pool"], pool_plan, workers)
        planted = _planted_plan(spec)
        _write_eval(p, eval_plan, planted, workers)
        total = spec.images + spec.planted
        jobs = [
            (p["train"], p["copies"], spec, pool_tags, lo, min(lo + SAMPLES_PER_TAR, total), planted)
            for lo in range(0, total, SAMPLES_PER_TAR)
        ]
        train_bytes = sum(workers.imap_unordered(_write_train_tar, jobs))
        down = [t for t in pool_plan.tasks if t.path.startswith("downstream/")]
        list(workers.imap_unordered(_draw_file, [(p["root"], t) for t in down], chunksize=16))
    write_vocab_files(p["root"])
    pairs = [
        {"train_position": int(pos), "train_key": _key(pos), "eval_position": int(e), "eval_key": _key(e), "edit": k}
        for pos, (e, k) in sorted(planted.items())
    ]
    p["planted"].write_text(json.dumps({"pairs": pairs}, indent=1) + "\n")
    summary = {
        "spec": asdict(spec),
        "train_samples": spec.images + spec.planted,
        "train_tars": len(jobs),
        "train_jpeg_bytes": int(train_bytes),
        "pool_images": int(pool.shape[0]),
        "eval_images": spec.eval_images,
        "planted": len(pairs),
        "downstream_images": len(down),
        "downstream_classes": [c.name for c in pool_plan.downstream],
    }
    tmp = p["done"].with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, p["done"])
    return summary


def _key(position: int) -> str:
    return f"{position:09d}"


def _planted_plan(spec: InputsSpec) -> dict[int, tuple[int, str]]:
    """Training position -> (evaluation image, edit) of each planted copy, spread over the training stream."""
    rng = np.random.default_rng([spec.seed, _PLANT_STREAM])
    chosen = rng.choice(spec.eval_images, spec.planted, replace=False)
    positions = np.sort(rng.choice(spec.images + spec.planted, spec.planted, replace=False))
    return {int(pos): (int(e), EDITS[k % len(EDITS)]) for k, (pos, e) in enumerate(zip(positions, chosen))}


def _draw_pool(path: Path, plan, workers) -> tuple[np.ndarray, list[list[list[str]]]]:
    """The pool's pixels (saved as pool.npy) and TAG_VARIANTS hashtag lists per pool image (pool_tags.json)."""
    tags_path = path.with_name("pool_tags.json")
    if path.is_file() and tags_path.is_file():
        return np.load(path, mmap_mode="r"), json.loads(tags_path.read_text(encoding="utf-8"))
    n = plan.config.images
    chunks = [(plan.tasks[lo : min(lo + 64, n)], plan.junk) for lo in range(0, n, 64)]
    drawn = list(workers.imap(_draw_pool_chunk, chunks))
    pool = np.concatenate([pixels for pixels, _ in drawn])
    tags = [variants for _, chunk in drawn for variants in chunk]
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, pool)
    tags_path.write_text(json.dumps(tags, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return pool, tags


def _draw_pool_chunk(job) -> tuple[np.ndarray, list[list[list[str]]]]:
    """Worker: pool images drawn at POOL_SIZE, and the hashtag lists users write for each (drawing tags costs
    ~0.5 ms, more than cutting and encoding a training image, so each training image takes one of its pool
    image's TAG_VARIANTS lists)."""
    tasks, junk = job
    drawer = _TagDrawer(junk)
    pixels, tags = [], []
    for t in tasks:
        rng = np.random.default_rng(t.key)
        pixels.append(render([_BY_NAME[n] for n in t.concepts], rng, width=POOL_SIZE[1], height=POOL_SIZE[0]))
        tags.append([drawer.line(t.concepts, rng) for _ in range(TAG_VARIANTS)])
    return np.stack(pixels), tags


def _jpeg(image: Image.Image, quality: int = QUALITY) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _edit(pixels: np.ndarray, edit: str, rng: np.random.Generator) -> bytes:
    """A near copy: a crop of 2-5 % of the area, a smaller re-encode at low quality, or img2dataset's letterbox
    (longer side to 160, centred on a black or white square, quality 95)."""
    image = Image.fromarray(pixels)
    w, h = image.size
    if edit == "crop":
        cut = rng.uniform(0.01, 0.025, 4)
        return _jpeg(image.crop((int(cut[0] * w), int(cut[1] * h), w - int(cut[2] * w), h - int(cut[3] * h))))
    if edit == "reencode":
        return _jpeg(image.resize((int(w * 0.8), int(h * 0.8)), Image.BILINEAR), quality=int(rng.integers(40, 70)))
    side = 160
    scale = side / max(w, h)
    inner = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    square = Image.new("RGB", (side, side), (0, 0, 0) if rng.random() < 0.5 else (255, 255, 255))
    square.paste(inner, ((side - inner.size[0]) // 2, (side - inner.size[1]) // 2))
    return _jpeg(square, quality=95)


def _write_eval(p: dict[str, Path], plan, planted: dict[int, tuple[int, str]], workers) -> None:
    """The evaluation tars, drawn fresh (in chunks over the workers), and the planted copies' files."""
    edits = {e: k for e, k in planted.values()}
    n = plan.config.images
    for t, lo in enumerate(range(0, n, SAMPLES_PER_TAR)):
        path = p["eval"] / f"{t:05d}.tar"
        if path.is_file():
            continue
        hi = min(lo + SAMPLES_PER_TAR, n)
        chunks = [  # each chunk gets only its own tasks and lines (not the whole plan: 10^4 of each)
            (
                plan.config.seed,
                i,
                plan.tasks[i : min(i + 100, hi)],
                plan.lines[i : min(i + 100, hi)],
                edits,
                p["copies"],
            )
            for i in range(lo, hi, 100)
        ]
        with _TarOut(path) as tf:
            for samples in workers.imap(_eval_samples, chunks):
                for key, members in samples:
                    for suffix, data in members:
                        add_member(tf, f"{key}.{suffix}", data)


def _eval_samples(job) -> list[tuple[str, list[tuple[str, bytes]]]]:
    seed, lo, tasks, lines, edits, copies = job
    out = []
    for i, task, line in zip(range(lo, lo + len(tasks)), tasks, (json.loads(x) for x in lines)):
        pixels = render(
            [_BY_NAME[n] for n in task.concepts], np.random.default_rng(task.key), width=task.width, height=task.height
        )
        if i in edits:
            data = _edit(pixels, edits[i], np.random.default_rng([seed, _PLANT_STREAM, i]))
            (copies / f"{i:09d}.jpg").write_bytes(data)
            (copies / f"{i:09d}.json").write_text(json.dumps(line, ensure_ascii=False), encoding="utf-8")
        out.append((_key(i), _members(_key(i), _jpeg(Image.fromarray(pixels)), line)))
    return out


def _members(key: str, jpeg: bytes, line: dict) -> list[tuple[str, bytes]]:
    """img2dataset's members of a sample: the image, the JSON (key, status, tags or caption), the caption text."""
    meta = {"key": key, "status": "success", **{k: v for k, v in line.items() if k != "image"}}
    members = [("jpg", jpeg), ("json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))]
    if isinstance(line.get("caption"), str):
        members.append(("txt", line["caption"].encode("utf-8")))
    return members


class _TarOut:
    """A tar written to PATH.tmp and renamed to PATH when closed without error."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")

    def __enter__(self) -> tarfile.TarFile:
        self.tf = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)  # ASCII names: no PAX headers needed
        return self.tf

    def __exit__(self, kind, value, tb) -> None:
        self.tf.close()
        if kind is None:
            os.replace(self.tmp, self.path)


def _write_train_tar(job) -> int:
    """Worker: one training tar of positions [lo, hi): pool crops (and the planted copies at their positions);
    returns the JPEG bytes written (0 when the tar was already there)."""
    folder, copies, spec, pool_tags, lo, hi, planted = job
    path = folder / f"{lo // SAMPLES_PER_TAR:05d}.tar"
    if path.is_file():
        return 0
    pool = np.load(folder.parent / "pool.npy", mmap_mode="r")
    rng = np.random.default_rng([spec.seed, _TRAIN_STREAM, lo // SAMPLES_PER_TAR])
    (ph, pw), (th, tw) = POOL_SIZE, TRAIN_SIZE
    ramp = np.arange(256, dtype=np.float32)
    written = 0
    with _TarOut(path) as tf:
        for pos in range(lo, hi):
            if pos in planted:  # the copy carries its evaluation image's tags, as a re-upload would
                e = planted[pos][0]
                jpeg = (copies / f"{e:09d}.jpg").read_bytes()
                line = json.loads((copies / f"{e:09d}.json").read_text(encoding="utf-8"))
            else:
                j, x, y, flip = (int(v) for v in rng.integers(0, (pool.shape[0], pw - tw + 1, ph - th + 1, 2)))
                lut = np.clip(ramp * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)  # brightness
                window = lut[pool[j, y : y + th, x : x + tw]]
                jpeg = _jpeg(Image.fromarray(window[:, ::-1] if flip else window))
                line = {"tags": pool_tags[j][int(rng.integers(TAG_VARIANTS))]}
            written += len(jpeg)
            for suffix, data in _members(_key(pos), jpeg, line):
                add_member(tf, f"{_key(pos)}.{suffix}", data)
    return written


class _TagDrawer:
    """The synthetic world's tagging model, set up once per worker."""

    def __init__(self, junk: list[str]):
        self.model = TagModel()
        self.kw = dict(
            model=self.model,
            all_concepts=CONCEPTS,
            concept_p=zipf_probs(len(CONCEPTS), WorldConfig.zipf),
            junk=junk,
            nonvisual_p=zipf_probs(len(NONVISUAL), 1.0),
            junk_p=zipf_probs(len(junk), 0.7),
        )

    def line(self, names: tuple[str, ...], rng: np.random.Generator) -> list[str]:
        tokens = draw_tokens([_BY_NAME[n] for n in names], rng, **self.kw)
        return write_line("", tokens, rng, caption=False, model=self.model)["tags"]


def _draw_file(job) -> None:
    root, task = job
    path = root / task.path
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = render(
        [_BY_NAME[n] for n in task.concepts], np.random.default_rng(task.key), width=task.width, height=task.height
    )
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(pixels).save(tmp, "JPEG", quality=QUALITY)
    os.replace(tmp, path)
