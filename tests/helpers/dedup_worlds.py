"""Tiny converted datasets with planted near and exact copies, for the dedup tests."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from tagstream.tools.synth.draw import photo_like

N_TRAIN = 24
SIZE = (96, 72)
# eval image -> (train image it copies, how); eval images 4.. are new, distinct images
PLANTED = {0: (3, "resize"), 1: (10, "jpeg"), 2: (17, "brightness"), 3: (21, "same file")}
N_EVAL = 8


@dataclass(frozen=True)
class Worlds:
    train: Path
    eval: Path
    eval2: Path  # a second evaluation set: a resized copy of train image 5, a new image, train image 7 flipped


def _source(root: Path, images: list[Image.Image], files: dict[int, Path] | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    lines = []
    for i, img in enumerate(images):
        path = root / "images" / f"{i:03d}.jpg"
        if files and i in files:
            shutil.copyfile(files[i], path)  # byte-identical input file
        else:
            img.save(path, quality=92)
        lines.append(json.dumps({"image": f"images/{i:03d}.jpg", "tags": ["#all", f"#m{i % 3}"], "id": f"i{i}"}))
    (root / "hashtags.jsonl").write_text("\n".join(lines) + "\n")
    return root / "hashtags.jsonl"


def _jpeg55(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=55)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def build_worlds(tmp: Path) -> Worlds:
    from tagstream.tools.convert.engine import convert

    rng = np.random.default_rng(0)
    train_imgs = [Image.fromarray(photo_like(rng, *SIZE)) for _ in range(N_TRAIN)]
    train_src = _source(tmp / "train_src", train_imgs)
    edits = {
        "resize": lambda im: im.resize((SIZE[0] * 3 // 2, SIZE[1] * 3 // 2), Image.Resampling.BILINEAR),
        "jpeg": _jpeg55,
        "brightness": lambda im: ImageEnhance.Brightness(im).enhance(1.08),
        "same file": lambda im: im,
    }
    eval_imgs = [edits[how](train_imgs[t]) for t, how in PLANTED.values()]
    eval_imgs += [Image.fromarray(photo_like(rng, *SIZE)) for _ in range(N_EVAL - len(PLANTED))]
    files = {e: train_src.parent / "images" / f"{t:03d}.jpg" for e, (t, how) in PLANTED.items() if how == "same file"}
    eval_src = _source(tmp / "eval_src", eval_imgs, files)
    flipped = train_imgs[7].transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    eval2_src = _source(
        tmp / "eval2_src", [train_imgs[5].resize((80, 60)), Image.fromarray(photo_like(rng, *SIZE)), flipped]
    )
    out = Worlds(tmp / "train", tmp / "eval", tmp / "eval2")
    convert(train_src, out.train, shard_size=10)
    convert(eval_src, out.eval, shard_size=3)
    convert(eval2_src, out.eval2, shard_size=10)
    return out


# padded world: eval image -> (train image, how it was padded); train images 4.. are distinct images
PADDED = {0: (0, "border 256"), 1: (1, "border 224 white"), 2: (2, "pillarbox blue"), 3: (3, "border 256")}
N_PADDED_TRAIN = 8


@dataclass(frozen=True)
class PaddedWorlds:
    train: Path  # padded copies (img2dataset's border mode, a pillarbox) among distinct images
    eval: Path  # the unpadded originals (image 2 portrait), and distinct images


def build_padded_worlds(tmp: Path) -> PaddedWorlds:
    """Eval originals at their own size; train copies letterboxed/pillarboxed as downloaders store them."""
    from tagstream.tools.convert.engine import convert
    from tagstream.tools.dedup.quality import img2dataset_border

    rng = np.random.default_rng(1)
    originals = [Image.fromarray(photo_like(rng, *((120, 160) if i == 2 else (200, 150)))) for i in range(6)]
    pads = {
        "border 256": img2dataset_border(256),
        "border 224 white": img2dataset_border(224, (255, 255, 255)),
        "pillarbox blue": img2dataset_border(200, (30, 60, 160)),
    }
    train = [pads[how](originals[e], rng) for e, (_, how) in sorted(PADDED.items())]
    train += [Image.fromarray(photo_like(rng, 200, 150)) for _ in range(N_PADDED_TRAIN - len(train))]
    out = PaddedWorlds(tmp / "train", tmp / "eval")
    convert(_source(tmp / "train_src", train), out.train, shard_size=5)
    convert(_source(tmp / "eval_src", originals), out.eval, shard_size=4)
    return out


def drop_content_boxes(src: Path, dst: Path) -> Path:
    """A copy of dataset `src` as converted before content boxes were stored (no index/*.content_box.npy)."""
    shutil.copytree(src, dst)
    for p in (dst / "index").glob("*.content_box.npy"):
        p.unlink()
    return dst


def tiny_checkpoint(out_dir: Path, *, vocab: str, image_size: int = 32, classes: int = 3) -> Path:
    """A random-initialised regnet_y_tiny saved as a complete tagstream checkpoint (seeded): features that are
    the same for the same pixels, which is all the mechanics of the embedding method need."""
    import torch

    from tagstream.train.checkpoint import save_checkpoint
    from tagstream.train.models import build_model

    torch.manual_seed(0)
    net = build_model("regnet_y_tiny", classes, image_size=image_size)
    state = {
        "step": 1,
        "model": net.state_dict(),
        "model_name": "regnet_y_tiny",
        "num_classes": classes,
        "optimizer": {},
        "schedule": {},
        "loader": {},
        "rng": {},
        "world": 1,
        "config": {"data": {"image_size": image_size, "vocab": vocab}},
    }
    return save_checkpoint(state, out_dir, keep_last=1)


@contextmanager
def one_faiss_thread() -> Iterator[None]:
    """faiss's OpenMP threads spin-wait; on a busy 2-core machine one thread is many times faster for tiny searches."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
