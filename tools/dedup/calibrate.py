"""Calibrate the two de-duplication methods on the same planted set: originals (the "evaluation" images),
each copied once per edit family (tools.dedup.transforms) into a pool with distractors, both datasets
written by `convert` and scored as `tagstream dedup` scores them (the stored pHash; the features of
`tagstream embed` with the checkpoint). Recall per family and false matches among all distinct pairs
give, for a chosen false-match rate, the hash distance and the cosine threshold, compared side by side.

The trade-off: images come from the synthetic world's renderer (tools.synth.draw.render), the domain of
the `make demo` checkpoint, so a model trained elsewhere meets images unlike its own; and distractors
share the world's few scenes and shapes, so look-alike distinct images are common: false-match rates
here are pessimistic for varied photo collections.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tagstream.kernels.phash import hamming
from tagstream.tools.dedup.features import EmbedOptions, embed_dataset, open_features
from tagstream.tools.dedup.hashing import mirror_hashes
from tagstream.tools.dedup.transforms import TRANSFORMS

DEMO_CHECKPOINTS = Path("demo-out/runs/sqrt")  # where `make demo` leaves its square-root sampling run


def default_checkpoint() -> Path:
    """The newest checkpoint of `make demo`'s square-root run, under the current directory."""
    from tagstream.train.checkpoint import latest_checkpoint

    found = latest_checkpoint(DEMO_CHECKPOINTS)
    if found is None:
        raise ValueError(
            f"no --checkpoint given and no `make demo` checkpoint in {DEMO_CHECKPOINTS}/: "
            "run `make demo` here, or pass --checkpoint CKPT (any tagstream checkpoint)"
        )
    return found


@dataclass(frozen=True)
class Calibration:
    """Scores of near copies (per family, one per original) and of every distinct (pool, original) pair."""

    checkpoint: str
    originals: int
    distractors: int
    near_cosine: dict[str, NDArray[np.float32]]
    near_distance: dict[str, NDArray[np.int64]]  # pHash distance; to the nearer of original and mirror if mirrors
    distinct_cosine: NDArray[np.float32]
    distinct_distance: NDArray[np.int64]
    mirrors: bool

    def allowed(self, fpr: float) -> int:
        """False matches a rate of `fpr` allows among the distinct pairs measured."""
        return int(np.floor(fpr * self.distinct_cosine.size + 1e-9))

    def threshold(self, fpr: float) -> float:
        """The smallest cosine threshold with at most fpr x (distinct pairs) false matches."""
        neg = np.sort(self.distinct_cosine)[::-1]
        k = self.allowed(fpr)
        t = float(np.nextafter(neg[k], np.float32(2))) if k < neg.size else 0.0
        return min(max(t, 1e-6), 1.0)  # dedup's thresholds lie in (0, 1]

    def distance(self, fpr: float) -> int:
        """The largest hash distance with at most fpr x (distinct pairs) false matches (-1: none)."""
        counts = np.cumsum(np.bincount(self.distinct_distance, minlength=65))
        ok = np.flatnonzero(counts <= self.allowed(fpr))
        return int(ok[-1]) if ok.size else -1

    def recall_embed(self, family: str, threshold: float) -> float:
        return float(np.mean(self.near_cosine[family] >= threshold))

    def recall_hash(self, family: str, distance: int) -> float:
        return float(np.mean(self.near_distance[family] <= distance))


def _scene(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    from tagstream.tools.synth.concepts import CONCEPTS
    from tagstream.tools.synth.draw import render

    scenes = [c for c in CONCEPTS if c.kind == "scene"]
    objects = [c for c in CONCEPTS if c.kind == "object"]
    chosen = [scenes[int(rng.integers(len(scenes)))]] if rng.random() < 0.5 else []
    chosen += [objects[int(k)] for k in rng.choice(len(objects), size=int(rng.integers(1, 3)), replace=False)]
    return Image.fromarray(render(chosen, rng, width=width, height=height))


def _dataset(root: Path, images: list[Image.Image]) -> Path:
    """Convert `images` (JPEG q95 files, as a collection would hold them) into a dataset with a vocabulary."""
    from tagstream.tools.convert.engine import convert
    from tagstream.tools.vocab.build import VocabOptions, build_vocab

    (root / "src" / "images").mkdir(parents=True)
    lines = []
    for i, img in enumerate(images):
        img.save(root / "src" / "images" / f"{i:06d}.jpg", quality=95)
        lines.append(json.dumps({"image": f"images/{i:06d}.jpg", "tags": ["#calibration"], "id": str(i)}))
    (root / "src" / "hashtags.jsonl").write_text("\n".join(lines) + "\n")
    convert(root / "src" / "hashtags.jsonl", root / "ds", workers=1)
    build_vocab(root / "ds", "v", VocabOptions())
    return root / "ds"


def measure(
    checkpoint: str | Path,
    *,
    originals: int = 200,
    distractors: int = 2000,
    side: tuple[int, int] = (128, 192),
    mirrors: bool = True,
    seed: int = 0,
    device: str = "auto",
    workdir: str | Path | None = None,
) -> Calibration:
    """Render, edit, convert, embed and score (see the module docstring). Pool layout: distractors first,
    then family k's copies of originals 0..n-1 at distractors + k * n + i."""
    from tagstream.loader.data import Dataset

    if originals < 2 or distractors < 0:
        raise ValueError(f"originals={originals!r} (>= 2) and distractors={distractors!r} (>= 0) are required")
    rng = np.random.default_rng(seed)

    def size() -> tuple[int, int]:
        return int(rng.integers(side[0], side[1] + 1)), int(rng.integers(side[0], side[1] + 1))

    orig = [_scene(rng, *size()) for _ in range(originals)]
    pool = [_scene(rng, *size()) for _ in range(distractors)]
    for edit, _ in TRANSFORMS.values():
        pool += [edit(img, rng) for img in orig]
    with tempfile.TemporaryDirectory(prefix="tagstream-calibrate-", dir=workdir) as tmp:
        ev_root, pool_root = _dataset(Path(tmp) / "eval", orig), _dataset(Path(tmp) / "pool", pool)
        options = EmbedOptions(checkpoint=str(checkpoint), device=device)
        ev_ds, pool_ds = Dataset(ev_root), Dataset(pool_root)
        ev = open_features([embed_dataset(ev_root, options, tmp)], ev_ds).dense()
        pf = open_features([embed_dataset(pool_root, options, tmp)], pool_ds).dense()
        ev_hash, pool_hash = ev_ds.global_array("phash"), pool_ds.global_array("phash")
        mirror = mirror_hashes(ev_ds) if mirrors else None
    cos = pf @ ev.T  # (pool, originals)
    dist = hamming(pool_hash[:, None], ev_hash[None, :])
    if mirror is not None:
        dist = np.minimum(dist, hamming(pool_hash[:, None], mirror[None, :]))
    copy_of = np.full(len(pool), -1)
    copy_of[distractors:] = np.tile(np.arange(originals), len(TRANSFORMS))
    distinct = copy_of[:, None] != np.arange(originals)[None, :]
    near_cos, near_d = {}, {}
    for k, family in enumerate(TRANSFORMS):
        rows = distractors + k * originals + np.arange(originals)
        near_cos[family] = cos[rows, np.arange(originals)].astype(np.float32)
        near_d[family] = dist[rows, np.arange(originals)].astype(np.int64)
    return Calibration(
        str(checkpoint),
        originals,
        distractors,
        near_cos,
        near_d,
        cos[distinct].astype(np.float32),
        dist[distinct].astype(np.int64),
        mirrors,
    )
