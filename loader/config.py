"""LoaderConfig: every setting of a loader, frozen and validated at construction."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from tagstream.kernels.weights import COMBINES, SAMPLINGS, check_combine, sampling_power  # defined with the kernels
from tagstream.loader.data.retries import Retry
from tagstream.loader.pipeline.sizes import MAX_SIZE, check_size, check_size_schedule, size_at
from tagstream.loader.sampling.eligible import SPLITS
from tagstream.loader.sampling.sampler import check_one_pass

TARGETS = ("soft", "multihot", "sparse")
MODES = ("train", "eval")
DEVICES = ("cpu", "gpu")
CPU_DECODERS = ("auto", "turbo", "dali")

# Upper bounds of the settings that size processes, threads, queues and arrays: a value past them is a typo or a
# hostile --set (data.workers=10000 ran out of file descriptors, run.threads=100000 out of memory), refused with
# one line before anything starts. Generous for the largest machines; README "Bounds" lists them.
MAX_WORKERS = 256
MAX_THREADS = 1024
MAX_PREFETCH = 64
MAX_PARTITIONS = 1 << 20
MAX_SAMPLES_PER_EPOCH = 1 << 40
MAX_SEED = (1 << 63) - 1
MAX_BYTES = (1 << 63) - 1


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
    partitions: int | None = None,
    cache_limit: int = 0,
    one_pass: bool = False,
    drop_last: bool = False,
    storage_timeout: float = 150.0,
) -> None:
    """The checks a LoaderConfig and the trainer's DataConfig share, in one place; `prefix` names the keys as the
    user wrote them ("data." in a recipe). Every number is checked for its type and its range. Whether a world size
    fits the partitions is checked when a loader is built for one (loader/sampling/partitions.check_layout)."""
    sampling_power(sampling)  # the one parser of the sampling law: here only to refuse a bad one early
    check_one_pass(
        prefix=prefix, one_pass=one_pass, drop_last=drop_last, sampling=sampling, samples_per_epoch=samples_per_epoch
    )
    check_combine(combine, name=f"{prefix}combine")
    if cpu_decoder not in CPU_DECODERS:
        raise ValueError(f"{prefix}cpu_decoder={cpu_decoder!r} is not one of {CPU_DECODERS}")
    if not isinstance(holdout_fraction, (int, float)) or not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"{prefix}holdout_fraction={holdout_fraction!r} must be in [0, 1)")
    for name, value, lo, hi, unset in (
        ("workers", workers, 0, MAX_WORKERS, ""),
        ("threads", threads, 1, MAX_THREADS, ""),
        ("prefetch", prefetch, 1, MAX_PREFETCH, ""),
        ("samples_per_epoch", samples_per_epoch, 1, MAX_SAMPLES_PER_EPOCH, " (or unset: the eligible images)"),
        ("partitions", partitions, 1, MAX_PARTITIONS, " (or unset: the world size)"),
        ("cache_limit", cache_limit, 0, MAX_BYTES, " bytes (0 = no limit)"),
    ):
        if value is None and unset:
            continue
        check_int(f"{prefix}{name}", value, lo, hi, unset)
    try:
        Retry.within(storage_timeout)
    except ValueError as exc:
        raise ValueError(f"{prefix}{exc}") from None


def check_int(key: str, value: object, lo: int, hi: int, note: str = "") -> None:
    """ValueError unless value is a whole number in [lo, hi] (a bool is not one)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{key}={value!r} must be a whole number in [{lo}, {hi}]{note}")


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
    "check_int",
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
    # one_pass=True (sampling="natural", train mode): an epoch visits every eligible image exactly once, in a new
    # order each epoch, on every world size and across resumes (without replacement, as a DataLoader's shuffle=True);
    # the last global batch is filled up with images from the start of the epoch's order (drop_last=False, the
    # default: every batch full) or left out (drop_last=True: its images are not seen that epoch)
    one_pass: bool = False
    drop_last: bool = False
    # sample-stream partitions, fixed when a run starts (default: its world size); a run resumes on any
    # world size dividing it with the same global batches (loader/sampling/partitions.py)
    partitions: int | None = None
    image_size: int = 224  # train crop size (when size_schedule is empty) and eval size
    # progressive resizing (train only): (first epoch, size) pairs, e.g. ((0, 160), (2, 192), (4, 224)); see loader/pipeline/sizes.py
    size_schedule: tuple[tuple[int, int], ...] = ()
    resize_size: int | None = None  # eval: shorter side before the centre crop; default image_size * 256 / 224
    # eval: the centre crop taken inside each image's content box (inside uniform borders: index content_box),
    # as de-duplication's embeddings are; False: of the whole frame
    eval_content_box: bool = False
    # eval: read at most this many of the eligible images, evenly spread in dataset order, the same images on any
    # world size (loader/sampling/eligible.py thin_eval_share); 0 = every image
    eval_max_images: int = 0
    random_area: tuple[float, float] = (0.08, 1.0)
    random_aspect_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    targets: str = "soft"
    max_labels: int = 16  # sparse targets: labels kept per image
    device: str = "cpu"
    device_id: int | None = None  # GPU: the local rank's device
    workers: int = 2  # CPU path: worker processes reading and decoding (py_num_workers); where DALI decodes
    # (GPU, cpu_decoder="dali") the training process reads whole batches itself (loader/pipeline/batch_source.py) and this is unused
    threads: int = 2  # DALI native threads (decode, resize)
    prefetch: int = 2
    antialias: bool = True  # train resize: antialiased linear (as torchvision/Pillow); False: plain bilinear
    # CPU decoder (turbo): a crop or eval box >= 2x the output size on both sides decodes at 1/2, 1/4 or 1/8
    # scale (libjpeg's DCT scaling), then resizes; False: always full scale, the pixels of torchvision's
    # RandomResizedCrop on PIL within 2 (DCT scaling moves them by more: docs/loader-bench.md)
    dct_scaling: bool = True
    # CPU decoding: "turbo" = the source workers decode the window and resize (loader/pipeline/turbo.py), "dali" =
    # DALI's CPU decoder and resize in the pipeline; "auto" = turbo when its extension is built
    cpu_decoder: str = "auto"
    # a dataset given as a URL (s3://, gs://, ...): its local mirror goes under cache_dir (default
    # ~/.cache/tagstream/datasets), holding at most cache_limit bytes of shards (0 = no limit); loader/data/cache.py;
    # verify_shards' stamps go under cache_dir/verified (default ~/.cache/tagstream/verified)
    cache_dir: str | None = None
    cache_limit: int = 0
    # a local shard's whole content checked against the manifest's sha256 before its first read on this machine,
    # and the index arrays, vocabulary and masks the run reads against theirs (once: a stamp under
    # cache_dir/verified, by default ~/.cache/tagstream/verified); False: a shard's size and LMDB meta page only
    # (a URL's files are always checked as they download)
    verify_shards: bool = False
    # the most a stalled or failing server may cost a run, in seconds (per shard, shared by the prefetcher and the
    # readers): 5 attempts, each timing out after (storage_timeout - 3.75) / 5 s without a byte; retries.Retry.within
    storage_timeout: float = 150.0

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
            partitions=self.partitions,
            cache_limit=self.cache_limit,
            one_pass=self.one_pass,
            drop_last=self.drop_last,
            storage_timeout=self.storage_timeout,
        )
        check_int("seed", self.seed, 0, MAX_SEED)
        check_int("batch_size", self.batch_size, 1, MAX_SAMPLES_PER_EPOCH)
        check_size(self.image_size, name="image_size")
        if self.size_schedule:
            if self.mode != "train":
                raise ValueError(
                    f"size_schedule={self.size_schedule} applies to mode='train' only; eval uses image_size"
                )
            object.__setattr__(self, "size_schedule", check_size_schedule(self.size_schedule, name="size_schedule"))
        if self.resize_size is not None:
            if isinstance(self.resize_size, int) and self.resize_size < self.image_size:
                raise ValueError(
                    f"resize_size={self.resize_size} must be >= image_size={self.image_size} (eval crops image_size from it)"
                )
            check_int("resize_size", self.resize_size, self.image_size, 2 * MAX_SIZE)
        check_int("max_labels", self.max_labels, 1, 1 << 16)
        check_int("eval_max_images", self.eval_max_images, 0, MAX_SAMPLES_PER_EPOCH, " (0 = every image)")
        lo, hi = self.random_area
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"random_area={self.random_area} must satisfy 0 < lo <= hi <= 1")

    def train_size(self, epoch: int) -> int:
        """The train crop size of `epoch`: size_schedule's entry in force, else image_size."""
        return size_at(self.size_schedule, epoch) if self.size_schedule else self.image_size
