"""LoaderConfig: every setting of a loader, frozen and validated at construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from tagstream.kernels.weights import COMBINES, SAMPLINGS, sampling_power  # one definition, shared with the kernels
from tagstream.loader.sizes import check_size_schedule, size_at

TARGETS = ("soft", "multihot", "sparse")
MODES = ("train", "eval")
DEVICES = ("cpu", "gpu")
CPU_DECODERS = ("auto", "turbo", "dali")
SPLITS = ("train", "holdout", "all")


def check_data_settings(
    *,
    prefix: str = "",
    sampling: str,
    combine: str,
    holdout_fraction: float,
    cpu_decoder: str,
    workers: int,
    threads: int,
    prefetch: int,
    samples_per_epoch: int | None,
    cache_limit: int = 0,
) -> None:
    """The checks a LoaderConfig and the trainer's DataConfig share, in one place; `prefix` names the keys as the
    user wrote them ("data." in a recipe)."""
    sampling_power(sampling)
    for name, value, allowed in (("combine", combine, COMBINES), ("cpu_decoder", cpu_decoder, CPU_DECODERS)):
        if value not in allowed:
            raise ValueError(f"{prefix}{name}={value!r} is not one of {allowed}")
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"{prefix}holdout_fraction={holdout_fraction} must be in [0, 1)")
    if samples_per_epoch is not None and samples_per_epoch < 1:
        raise ValueError(f"{prefix}samples_per_epoch={samples_per_epoch} must be >= 1")
    if workers < 0 or threads < 1 or prefetch < 1:
        raise ValueError(f"{prefix}workers={workers} must be >= 0, threads={threads} and prefetch={prefetch} >= 1")
    if not isinstance(cache_limit, int) or isinstance(cache_limit, bool) or cache_limit < 0:
        raise ValueError(f"{prefix}cache_limit={cache_limit!r} must be a whole number of bytes >= 0 (0 = no limit)")


__all__ = [
    "COMBINES",
    "CPU_DECODERS",
    "DEVICES",
    "MODES",
    "SAMPLINGS",
    "SPLITS",
    "TARGETS",
    "LoaderConfig",
    "check_data_settings",
    "sampling_power",
]


@dataclass(frozen=True)
class LoaderConfig:
    dataset: str
    vocab: str
    mode: str = "train"  # train: resampled, augmented; eval: every image once, in order, centre crop
    split: str = "all"  # with holdout_fraction > 0: "train" excludes the held-out images, "holdout" is only them
    holdout_fraction: float = 0.0
    sampling: str = "sqrt"
    combine: str = "sum"
    masks: tuple[str, ...] = ()  # names under masks/: images never drawn
    seed: int = 0
    batch_size: int = 32  # per rank
    samples_per_epoch: int | None = None  # global draws per epoch; default: number of eligible images
    # sample-stream partitions, fixed when a run starts (default: its world size); a run resumes on any
    # world size dividing it with the same global batches (loader/partitions.py)
    partitions: int | None = None
    image_size: int = 224  # train crop size (when size_schedule is empty) and eval size
    # progressive resizing (train only): (first epoch, size) pairs, e.g. ((0, 160), (2, 192), (4, 224)); see loader/sizes.py
    size_schedule: tuple[tuple[int, int], ...] = ()
    resize_size: int | None = None  # eval: shorter side before the centre crop; default image_size * 256 / 224
    random_area: tuple[float, float] = (0.08, 1.0)
    random_aspect_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    targets: str = "soft"
    max_labels: int = 16  # sparse targets: labels kept per image
    device: str = "cpu"
    device_id: int | None = None  # GPU: the local rank's device
    workers: int = 2  # CPU path: worker processes reading and decoding (py_num_workers); where DALI decodes
    # (GPU, cpu_decoder="dali") the training process reads whole batches itself (loader/feed.py) and this is unused
    threads: int = 2  # DALI native threads (decode, resize)
    prefetch: int = 2
    antialias: bool = True  # train resize: antialiased linear (as torchvision/Pillow); False: plain bilinear
    # CPU decoder (turbo): a crop or eval box >= 2x the output size on both sides decodes at 1/2, 1/4 or 1/8
    # scale (libjpeg's DCT scaling), then resizes; False: always full scale, the pixels of torchvision's
    # RandomResizedCrop on PIL within 1 (DCT scaling moves them by more: docs/loader-bench.md)
    dct_scaling: bool = True
    # CPU decoding: "turbo" = the source workers decode the window and resize (loader/turbo.py), "dali" =
    # DALI's CPU decoder and resize in the pipeline; "auto" = turbo when its extension is built
    cpu_decoder: str = "auto"
    # a dataset given as a URL (s3://, gs://, ...): its local mirror goes under cache_dir (default
    # ~/.cache/tagstream/datasets), holding at most cache_limit bytes of shards (0 = no limit); loader/remote.py
    cache_dir: str | None = None
    cache_limit: int = 0
    # a local shard's whole content checked against the manifest's sha256 before its first read on this machine
    # (once: a stamp under ~/.cache/tagstream/verified); False: its size and LMDB meta page only (a URL's shards
    # are always checked as they download)
    verify_shards: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("mode", self.mode, MODES),
            ("split", self.split, SPLITS),
            ("targets", self.targets, TARGETS),
            ("device", self.device, DEVICES),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {allowed}")
        check_data_settings(
            sampling=self.sampling,
            combine=self.combine,
            holdout_fraction=self.holdout_fraction,
            cpu_decoder=self.cpu_decoder,
            workers=self.workers,
            threads=self.threads,
            prefetch=self.prefetch,
            samples_per_epoch=self.samples_per_epoch,
            cache_limit=self.cache_limit,
        )
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        if self.partitions is not None and (not isinstance(self.partitions, int) or self.partitions < 1):
            raise ValueError(f"partitions={self.partitions!r} must be an integer >= 1 (or None: the world size)")
        if self.image_size < 8:
            raise ValueError(f"image_size={self.image_size} must be >= 8")
        if self.size_schedule:
            if self.mode != "train":
                raise ValueError(
                    f"size_schedule={self.size_schedule} applies to mode='train' only; eval uses image_size"
                )
            object.__setattr__(self, "size_schedule", check_size_schedule(self.size_schedule, name="size_schedule"))
        if self.resize_size is not None and self.resize_size < self.image_size:
            raise ValueError(
                f"resize_size={self.resize_size} must be >= image_size={self.image_size} (eval crops image_size from it)"
            )
        lo, hi = self.random_area
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"random_area={self.random_area} must satisfy 0 < lo <= hi <= 1")
        if self.cpu_decoder == "turbo":
            from tagstream.loader import turbo

            turbo.require()

    def train_size(self, epoch: int) -> int:
        """The train crop size of `epoch`: size_schedule's entry in force, else image_size."""
        return size_at(self.size_schedule, epoch) if self.size_schedule else self.image_size

    @property
    def source_decodes(self) -> bool:
        """True when the CPU path's source workers decode and resize (loader/turbo.py), not DALI's operators."""
        if self.device != "cpu" or self.cpu_decoder == "dali":
            return False
        from tagstream.loader import turbo

        return turbo.available()
