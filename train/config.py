"""Training config: nested frozen dataclasses read from TOML recipes plus `section.key=value` overrides.

Strict by design: an unknown section or key, or a value of the wrong type, raises ValueError naming
it and what is allowed, so a typo in a week-long run's recipe fails in the first second, not never.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from tagstream.loader import check_data_settings, check_int
from tagstream.loader.data import check_name
from tagstream.loader.pipeline import final_size, image_size_setting, parse_size_schedule
from tagstream.train.config_coerce import build_section, section_dict
from tagstream.train.ranges import check_ranges
from tagstream.train.recipe_files import read_recipe, recipe_names  # noqa: F401 - recipe_names: part of this face

LOSSES = ("softmax", "sigmoid")
OBJECTIVES = ("hashtags", "mae")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = ""  # dataset directory or URL such as s3://bucket/ds (required)
    vocab: str = ""  # vocabulary name under vocab/ (required)
    sampling: str = "sqrt"  # natural | sqrt | uniform | power:A
    combine: str = "sum"
    masks: tuple[str, ...] = ()  # masks/NAME.npy excluded from training (de-duplication)
    holdout_fraction: float = 0.0  # held-out split for evaluation; 0 = no evaluation
    # the most held-out images an evaluation reads (evenly spread over the split in dataset order), so its cost
    # does not grow with N while the split stays a fraction; 0 = the whole split
    holdout_max_images: int = 50_000
    samples_per_epoch: int | None = None  # default: number of eligible images
    # one_pass: every image once an epoch (natural sampling; loader/config.py); drop_last: its last partial batch out
    one_pass: bool = False
    drop_last: bool = False
    # sample-stream partitions, fixed when the run starts (default: its world size); --resume works on any
    # world size dividing it, with the same global batches (loader/sampling/partitions.py)
    partitions: int | None = None
    # train crop size, or a progressive-resizing schedule "SIZE@EPOCH,..." such as "160@0,192@2,224@4"
    # (loader/pipeline/sizes.py); the model and the held-out evaluation use the last (largest-epoch) size
    image_size: int | str = 224
    workers: int = 2  # loader worker processes per rank
    threads: int = 2  # loader decode threads per rank (DALI's; 1 is used when the workers decode)
    prefetch: int = 2
    cpu_decoder: str = "auto"  # CPU runs: auto | turbo (the workers decode the crop window) | dali
    antialias: bool = True  # train resize antialiased when shrinking (as torchvision on PIL images)
    dct_scaling: bool = True  # CPU decoder: large crops decoded at 1/2-1/8 scale; false: torchvision's pixels within 2
    # a URL dataset's local mirror and shard cache, and verify_shards' stamps (under verified/);
    # "" = ~/.cache/tagstream/datasets (stamps: ~/.cache/tagstream/verified)
    cache_dir: str = ""
    cache_limit: int = 0  # bytes of shards the cache may hold (all ranks sharing cache_dir); 0 = no limit
    # check each local shard's sha256 once per machine before reading it (loader/data/store.py)
    verify_shards: bool = False
    storage_timeout: float = 150.0  # seconds a stalled or failing server may cost the run (LoaderConfig)

    def __post_init__(self) -> None:
        check_data_settings(
            prefix="data.",
            sampling=self.sampling,
            combine=self.combine,
            holdout_fraction=self.holdout_fraction,
            cpu_decoder=self.cpu_decoder,
            workers=self.workers,
            threads=self.threads,
            prefetch=self.prefetch,
            samples_per_epoch=self.samples_per_epoch,
            partitions=self.partitions,
            cache_limit=self.cache_limit,
            one_pass=self.one_pass,
            drop_last=self.drop_last,
            storage_timeout=self.storage_timeout,
        )
        check_int("data.holdout_max_images", self.holdout_max_images, 0, 1 << 40, " (0 = the whole split)")
        if self.vocab:  # names inside the dataset, never paths: refused before a run directory is made
            check_name(self.vocab, "data.vocab: vocabulary")
        for mask in self.masks:
            check_name(mask, "data.masks: mask")
        object.__setattr__(self, "image_size", image_size_setting(self.image_size, name="data.image_size"))

    @property
    def size_schedule(self) -> tuple[tuple[int, int], ...]:
        """(first epoch, size) pairs; one pair (0, image_size) without progressive resizing."""
        return parse_size_schedule(self.image_size, name="data.image_size")

    @property
    def final_image_size(self) -> int:
        """The size the run ends at: the model's input size and the held-out evaluation's."""
        return final_size(self.size_schedule)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "resnet50"  # a key of tagstream.train.models.MODELS
    loss: str = "softmax"  # softmax: cross-entropy on 1/k soft targets (the paper's); sigmoid: per-class BCE
    label_smoothing: float = 0.0  # softmax only: targets (1 - e) * t + e / classes
    # hashtags: the classifier on the vocabulary; mae: masked-autoencoder pre-pretraining of a ViT (train/mae.py),
    # labels unused
    objective: str = "hashtags"
    mask_ratio: float = 0.75  # mae: share of each image's patches the encoder does not see
    decoder_dim: int = 512  # mae: the decoder's width, blocks and heads (MAE's defaults)
    decoder_layers: int = 8
    decoder_heads: int = 16
    norm_pix_loss: bool = True  # mae: each target patch standardised by its own mean and variance
    init: str = ""  # a checkpoint whose encoder weights start the run (train/init.py; heads and decoder dropped)

    def __post_init__(self) -> None:
        from tagstream.train.models import MODELS

        if self.name not in MODELS:
            raise ValueError(f"model.name={self.name!r} is not one of {sorted(MODELS)}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"model.objective={self.objective!r} is not one of {OBJECTIVES}")
        if self.objective == "mae" and not self.name.startswith("vit_"):
            raise ValueError(f"model.objective='mae' needs a ViT (model.name vit_*), not {self.name!r}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"model.mask_ratio={self.mask_ratio} must be in [0, 1)")
        if min(self.decoder_dim, self.decoder_layers, self.decoder_heads) < 1 or self.decoder_dim % self.decoder_heads:
            raise ValueError(
                f"model.decoder_dim={self.decoder_dim}, decoder_layers={self.decoder_layers} and decoder_heads="
                f"{self.decoder_heads} must be >= 1, the width a multiple of the heads"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"model.loss={self.loss!r} is not one of {LOSSES}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"model.label_smoothing={self.label_smoothing} must be in [0, 1)")
        if self.label_smoothing and self.loss != "softmax":
            raise ValueError(
                f"model.label_smoothing={self.label_smoothing} needs model.loss='softmax' (got {self.loss!r})"
            )


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"  # sgd (momentum, nesterov) | adamw (betas, eps): see train/optim.py
    base_lr: float = 0.1  # learning rate per base_batch_size images; scaled linearly with the global batch
    base_batch_size: int = 256
    momentum: float = 0.9  # sgd
    nesterov: bool = True  # sgd
    betas: tuple[float, ...] = (0.9, 0.999)  # adamw
    eps: float = 1e-8  # adamw
    weight_decay: float = 1e-4
    # false: no weight decay on biases, norm layers, ViT class token and position embedding
    decay_norm_and_bias: bool = True
    grad_clip: float = 0.0  # clip the global gradient norm to this before each step; 0 = off
    # decay of an exponential moving average of the weights, updated every step; 0 = off (train/ema.py)
    ema: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.ema < 1:
            raise ValueError(f"optim.ema={self.ema} must be in [0, 1): the EMA decay per step (e.g. 0.9999), 0 = off")
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optim.name={self.name!r} is not one of {OPTIMIZERS}")
        if self.name == "adamw" and self.nesterov:
            raise ValueError("optim.nesterov=true applies to optim.name='sgd'; set optim.nesterov=false with adamw")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas={list(self.betas)} must be two values in [0, 1)")
        if self.eps <= 0 or self.grad_clip < 0:
            raise ValueError(f"optim.eps={self.eps} must be > 0 and grad_clip={self.grad_clip} >= 0")
        if self.base_lr <= 0 or self.base_batch_size < 1:
            raise ValueError(
                f"optim.base_lr={self.base_lr} must be > 0 and base_batch_size={self.base_batch_size} >= 1"
            )
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError(
                f"optim.momentum={self.momentum} must be in [0, 1) and weight_decay={self.weight_decay} >= 0"
            )
        if self.nesterov and self.momentum == 0:
            raise ValueError("optim.nesterov=true needs optim.momentum > 0")


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "cosine"  # cosine | step | constant, after the warm-up
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None  # overrides warmup_epochs when set
    warmup_start_factor: float = 0.0  # LR at step 0 as a fraction of the peak LR
    milestones: tuple[float, ...] = ()  # step decay: fractions of training (0, 1) where LR *= gamma
    gamma: float = 0.1
    final_factor: float = 0.0  # cosine: LR at the end as a fraction of the peak LR

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule.kind={self.kind!r} is not one of {SCHEDULES}")
        if self.warmup_epochs < 0 or (self.warmup_steps is not None and self.warmup_steps < 0):
            raise ValueError(
                f"schedule.warmup_epochs={self.warmup_epochs} and warmup_steps={self.warmup_steps} must be >= 0"
            )
        if not 0 <= self.warmup_start_factor <= 1 or not 0 <= self.final_factor <= 1:
            raise ValueError("schedule.warmup_start_factor and final_factor must be in [0, 1]")
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(
                f"schedule.milestones={self.milestones} must be increasing fractions of training in (0, 1)"
            )
        if self.gamma <= 0:
            raise ValueError(f"schedule.gamma={self.gamma} must be > 0")


@dataclass(frozen=True)
class BatchConfig:
    global_size: int = 256  # images per optimizer step over all ranks
    grad_accum: int = 1  # micro-batches per optimizer step: per-rank batch = global_size / (world * grad_accum)

    def __post_init__(self) -> None:
        if self.global_size < 1 or self.grad_accum < 1:
            raise ValueError(f"batch.global_size={self.global_size} and grad_accum={self.grad_accum} must be >= 1")

    def per_rank(self, world: int) -> int:
        """Micro-batch size of one rank; refuses a global batch that does not split evenly."""
        parts = world * self.grad_accum
        if self.global_size % parts:
            raise ValueError(
                f"batch.global_size={self.global_size} is not divisible by world size {world} x "
                f"grad_accum {self.grad_accum} = {parts}; choose a multiple of {parts}"
            )
        return self.global_size // parts


@dataclass(frozen=True)
class RunConfig:
    out_dir: str = ""  # run directory: config.json, metrics.jsonl, checkpoints (required)
    epochs: int = 1
    steps: int | None = None  # optimizer steps; overrides epochs when set
    checkpoint_every: int = 1000  # optimizer steps between checkpoints; 0 = only at the end
    keep_last: int = 3  # checkpoints kept
    eval_every: int = 0  # optimizer steps between evaluations; 0 = only at the end
    log_every: int = 10  # optimizer steps between metrics records
    seed: int = 0
    device: str = "auto"  # auto: cuda when available
    bf16: bool = True  # autocast to bfloat16 (GPU only)
    channels_last: bool = True  # NHWC memory format (GPU only)
    threads: int | None = None  # torch CPU threads; fix it for bit-exact resume on CPU
    progress: bool = True  # progress bar on rank 0

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"run.device={self.device!r} is not one of {DEVICES}")
        if self.epochs < 1 or (self.steps is not None and self.steps < 1):
            raise ValueError(f"run.epochs={self.epochs} and run.steps={self.steps} must be >= 1")
        for name in ("checkpoint_every", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"run.{name}={getattr(self, name)} must be >= 0")
        if self.keep_last < 1 or self.log_every < 1:
            raise ValueError(f"run.keep_last={self.keep_last} and log_every={self.log_every} must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"run.threads={self.threads} must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        check_ranges({name: getattr(self, name) for name in SECTIONS})
        for key, value, option in (
            ("data.dataset", self.data.dataset, "--dataset DATASET"),
            # `tagstream train` gives an MAE run a one-class vocabulary of its own
            (
                "data.vocab",
                self.data.vocab or self.model.objective == "mae",
                "--vocab NAME; build one with `tagstream vocab DATASET --name NAME`",
            ),
            ("run.out_dir", self.run.out_dir, "--out DIR"),
        ):
            if not value:
                raise ValueError(f"{key} is required: give {option} (or set it in the recipe, or --set {key}=...)")
        if self.run.eval_every and self.data.holdout_fraction == 0:
            raise ValueError(
                f"run.eval_every={self.run.eval_every} needs a held-out split: set data.holdout_fraction > 0"
            )
        if len(self.data.size_schedule) > 1 and self.model.name.startswith("vit_"):
            raise ValueError(
                f"data.image_size={self.data.image_size!r} changes the size during the run, but {self.model.name}'s "
                "position embedding is built for one size; give a ViT a single data.image_size"
            )

    @property
    def lr(self) -> float:
        """Peak learning rate: base_lr scaled linearly with the global batch (Goyal et al.)."""
        return self.optim.base_lr * self.batch.global_size / self.optim.base_batch_size

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: section_dict(getattr(self, name)) for name in SECTIONS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        if not isinstance(raw, dict):
            raise ValueError(f"a config is a table of sections {sorted(SECTIONS)}, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown config section(s) {unknown}; allowed: {sorted(SECTIONS)}")
        parts = {}
        for name, section_cls in SECTIONS.items():
            body = raw.get(name, {})
            if not isinstance(body, dict):
                raise ValueError(f"[{name}] must be a table of keys, got {body!r}")
            parts[name] = build_section(name, section_cls, body)
        return cls(**parts)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "batch": BatchConfig,
    "run": RunConfig,
}


def parse_override(item: str) -> tuple[str, str, Any]:
    """ "section.key=value" -> (section, key, value); the value is read as a TOML value, else kept as text."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ValueError(f"override {item!r} must look like section.key=value (sections: {sorted(SECTIONS)})")
    path, text = item.split("=", 1)
    section, key = path.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return section, key, value


def load_config(recipe: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Resolve a TrainConfig: defaults, then the recipe (if any), then each override in order."""
    raw: dict[str, Any] = read_recipe(recipe) if recipe is not None else {}
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for item in overrides:
        section, key, value = parse_override(item)
        if section not in SECTIONS:
            raise ValueError(f"override {item!r}: unknown section {section!r}; allowed: {sorted(SECTIONS)}")
        raw.setdefault(section, {})[key] = value
    return TrainConfig.from_dict(raw)
