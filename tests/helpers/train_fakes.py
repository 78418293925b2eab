"""A small in-memory loader following tagstream.loader.api.Loader exactly, for trainer tests that must not
depend on DALI: learnable images (each class paints its own colour), soft or multi-hot targets, a sample
stream that is a pure function of (seed, epoch, rank, world, step) so resume can be checked exactly."""

from __future__ import annotations

import numpy as np
import torch

from tagstream.loader import Batch
from tagstream.loader.config import LoaderConfig

NUM_IMAGES = 240
NUM_CLASSES = 6
PALETTE = np.array([[220, 30, 30], [30, 220, 30], [30, 30, 220], [220, 220, 30], [30, 220, 220], [220, 30, 220]])


def image_classes(index: int) -> list[int]:
    a = index % NUM_CLASSES
    b = (index // NUM_CLASSES) % NUM_CLASSES
    return sorted({a, b}) if index % 3 == 0 else [a]


def image_pixels(index: int, size: int) -> np.ndarray:
    """Left half painted with the first class's colour, right half with the last's, plus noise."""
    cls = image_classes(index)
    rng = np.random.default_rng(index)
    img = np.empty((size, size, 3), np.float64)
    img[:, : size // 2] = PALETTE[cls[0]]
    img[:, size // 2 :] = PALETTE[cls[-1]]
    img += rng.normal(0, 25, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


class FakeLoader:
    """Train: samples_per_epoch // world // batch_size full batches drawn with replacement; eval: each
    held-out image once (contiguous rank shares, the last batch may be short)."""

    def __init__(self, config: LoaderConfig, rank: int = 0, world: int = 1):
        self.config = config
        self.rank, self.world = rank, world
        self.num_classes = NUM_CLASSES
        self.normalized = False
        n_hold = int(NUM_IMAGES * config.holdout_fraction)
        everything = np.arange(NUM_IMAGES)
        if config.split == "holdout":
            self.pool = everything[NUM_IMAGES - n_hold :]
        elif config.split == "train":
            self.pool = everything[: NUM_IMAGES - n_hold]
        else:
            self.pool = everything
        most = config.eval_max_images
        if config.mode == "eval" and 0 < most < len(self.pool):  # evenly spread, as the loader reads them
            self.pool = self.pool[(np.arange(most) * len(self.pool)) // most]
        b = config.batch_size
        if config.mode == "train":
            spe = config.samples_per_epoch or len(self.pool)
            self.batches = spe // world // b
        else:
            share = self.pool[rank * len(self.pool) // world : (rank + 1) * len(self.pool) // world]
            self.share = share
            self.batches = max(1, -(-len(self.pool) // world // b))
        self.epoch, self.step = 0, 0
        self.closed = False

    def __len__(self) -> int:
        return self.batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.step = epoch, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "world": self.world}

    def load_state_dict(self, state: dict) -> None:
        if state.get("world", self.world) != self.world:
            raise ValueError("world differs")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])

    def _indices(self, step: int) -> np.ndarray:
        b = self.config.batch_size
        if self.config.mode == "eval":
            return self.share[step * b : (step + 1) * b]
        rng = np.random.default_rng([self.config.seed, self.epoch, self.rank, self.world, step])
        return rng.choice(self.pool, size=b)

    def _targets(self, indices: np.ndarray) -> torch.Tensor:
        out = np.zeros((len(indices), NUM_CLASSES), np.float32)
        for row, i in enumerate(indices):
            cls = image_classes(int(i))
            out[row, cls] = 1.0 / len(cls) if self.config.targets == "soft" else 1.0
        return torch.from_numpy(out)

    def __iter__(self):
        if self.step >= self.batches:
            self.step = 0
        while self.step < self.batches:
            idx = self._indices(self.step)
            size = self.config.train_size(self.epoch) if self.config.mode == "train" else self.config.image_size
            images = (
                np.stack([image_pixels(int(i), size) for i in idx])
                if len(idx)
                else np.zeros((0, size, size, 3), np.uint8)
            )
            self.step += 1
            yield Batch(torch.from_numpy(images), self._targets(idx), torch.from_numpy(idx.astype(np.int64)))

    def close(self) -> None:
        self.closed = True


def fake_factory(config: LoaderConfig, rank: int = 0, world: int = 1) -> FakeLoader:
    return FakeLoader(config, rank, world)


def fake_run_config(out, *extra: str):
    """The tiny-cpu recipe over the fake loader: 16-px images, batch 16, one thread (bit-exact resume), no bar."""
    from tagstream.train.config import load_config

    return load_config(
        "tiny-cpu",
        [
            "data.dataset=fake",
            "data.vocab=fake",
            f"run.out_dir={out}",
            "data.image_size=16",
            "batch.global_size=16",
            "run.progress=false",
            "run.log_every=4",
            "run.threads=1",
            "schedule.warmup_steps=2",
            *extra,
        ],
    )
