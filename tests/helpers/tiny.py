"""Tiny converted datasets whose colour and tags encode each image's index (the `tiny_dataset` fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


class TinyDatasets:
    """Factory: `tiny_dataset(n=12, shard_size=5)` -> path of a freshly converted dataset.

    Image i is a flat colour `color(i)` of size `size` (default 64x48), stored as a baseline JPEG, with
    raw hashtags ['#All', '#Mod3_<i%3>', 'mod5_<i%5>'] that canonicalize to `tags(i)`; its source id is
    'img<i>'. `index_of(pixels)` recovers i from decoded pixels (robust to JPEG error, up to 4096 images).
    With conversion, global image index = input index (no input is rejected).
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        self._tmp = tmp_path_factory

    @staticmethod
    def color(i: int) -> tuple[int, int, int]:
        return 16 * (i % 16) + 8, 16 * ((i // 16) % 16) + 8, 16 * ((i // 256) % 16) + 8

    @staticmethod
    def tags(i: int) -> list[str]:
        return ["all", f"mod3_{i % 3}", f"mod5_{i % 5}"]

    @staticmethod
    def raw_tags(i: int) -> list[str]:
        return ["#All", f"#Mod3_{i % 3}", f"mod5_{i % 5}"]

    @staticmethod
    def index_of(pixels: np.ndarray) -> int:
        """Decoded HxWx3 pixels of one image (any crop/resize of it) -> its index."""
        r, g, b = (int(round((float(c) - 8) / 16)) for c in np.asarray(pixels, np.float64).reshape(-1, 3).mean(0))
        return r + 16 * g + 256 * b

    def source(self, n: int, *, size: tuple[int, int] = (64, 48)) -> Path:
        """A JSON-lines source of n images (hashtags.jsonl beside an images/ folder)."""
        root = self._tmp.mktemp("tiny_src")
        (root / "images").mkdir()
        lines = []
        for i in range(n):
            Image.new("RGB", size, self.color(i)).save(root / "images" / f"{i:05d}.jpg", quality=95)
            lines.append(json.dumps({"image": f"images/{i:05d}.jpg", "tags": self.raw_tags(i), "id": f"img{i}"}))
        (root / "hashtags.jsonl").write_text("\n".join(lines) + "\n")
        return root / "hashtags.jsonl"

    def __call__(self, n: int = 12, *, shard_size: int = 5, size: tuple[int, int] = (64, 48)) -> Path:
        from tagstream.tools.convert.engine import convert

        out = self._tmp.mktemp("tiny_ds") / "ds"
        convert(self.source(n, size=size), out, shard_size=shard_size)
        return out
