"""Labelled downstream datasets for the transfer tests: ImageFolder trees of noisy flat colours, converted."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (40, 50, 210)}


def imagefolder(root: Path, counts: dict[str, int], seed: int) -> Path:
    """root/<class>/NNN.jpg: counts[class] 40x40 images of the class's colour, jittered per image, plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for j in range(n):
            base = np.array(COLOURS[name]) + rng.integers(-25, 26, 3)
            px = np.clip(base + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / name / f"{j:03d}.jpg", quality=90)
    return root


def downstream_datasets(tmp_path: Path) -> tuple[Path, Path]:
    """(train, eval) converted datasets: 10/8/9 and 3/7/5 images of red/green/blue. The class counts differ,
    so the two datasets' vocabularies number the classes differently (transfer matches them by name)."""
    from tagstream.tools.convert.engine import convert

    train_src = imagefolder(tmp_path / "src_train", {"red": 10, "green": 8, "blue": 9}, 0)
    eval_src = imagefolder(tmp_path / "src_eval", {"red": 3, "green": 7, "blue": 5}, 1)
    convert(train_src, tmp_path / "train", format="imagefolder")
    convert(eval_src, tmp_path / "eval", format="imagefolder")
    return tmp_path / "train", tmp_path / "eval"
