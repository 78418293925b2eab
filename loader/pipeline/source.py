"""The decode-source variation point: the settings every external source of a DALI graph takes, as one typed object
(`SourceSettings`), and the base every source builds on (`DecodeSource`: what `build_pipeline` asks of a source).

Three sources implement it: `PlanSource` (plan_source.py: per sample, in worker processes; the reference the others
are tested against), `BatchSource` (batch_source.py: whole batches of JPEG views handed to DALI's decoder from the
training thread) and `DecodedBatchSource` (decode_source.py: the CPU path, whole batches decoded in worker
processes). A new decode path is another subclass here, and a branch in `graph.build_pipeline` on its flags only.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data import format as fmt
from tagstream.loader.data.store import ShardStore
from tagstream.loader.sampling.partitions import check_serving

PLACEHOLDER_SIDE = 16  # the grey JPEG decoded in place of eval padding
JPEG_SOI = b"\xff\xd8"


def source_decodes(device: str, cpu_decoder: str) -> bool:
    """The decode placement: True when the per-sample source's workers decode and resize with the CPU decoder
    (turbo.py), False when DALI's decoder does (the GPU; cpu_decoder="dali"; "auto" where the extension did not
    build). cpu_decoder="turbo" without the extension is refused with how to build it."""
    from tagstream.loader.pipeline import turbo

    if device != "cpu" or cpu_decoder == "dali":
        return False
    if cpu_decoder == "turbo":
        turbo.require()
    return turbo.available()


class Plan(Protocol):
    def plan(self, epoch: int, start: int = 0, stop: int | None = None) -> NDArray[np.int64]: ...


@dataclass(frozen=True)
class EvalPlan:
    """Eval order of one rank: its contiguous share of `indices`, padded with -1 to `length` positions."""

    indices: NDArray[np.int64]
    length: int

    def plan(self, epoch: int, start: int = 0, stop: int | None = None) -> NDArray[np.int64]:
        stop = self.length if stop is None else min(stop, self.length)
        out = np.full(max(stop - start, 0), -1, dtype=np.int64)
        real = self.indices[start:stop]
        out[: real.shape[0]] = real
        return out


def eval_resize_size(image_size: int, resize_size: int | None) -> int:
    """The shorter side an eval image is resized to before its centre crop: resize_size, or torchvision's
    convention image_size * 256 / 224 when it is not given."""
    return int(resize_size or round(image_size * 256 / 224))


def placeholder_jpeg() -> bytes:
    """A small grey JPEG decoded in place of eval padding (a per-sample source cannot emit short batches)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (PLACEHOLDER_SIDE, PLACEHOLDER_SIDE), (128, 128, 128)).save(buf, "JPEG", quality=75)
    return buf.getvalue()


@dataclass(frozen=True)
class SourceSettings:
    """What a decode source serves: plan positions [0, length) of `plan` from `store`, the first epoch starting at
    (base_epoch, base_position); train samples cropped by RandomResizedCrop (scale, ratio) keyed by (seed, epoch,
    partition, position) for a rank serving `serves` partitions of `share` samples a step; images of
    `image_size` square (eval: resized to `resize_size`, default image_size * 256 / 224, then centre-cropped; with
    `content_box`, the centre crop of the image's content box inside uniform borders)."""

    store: ShardStore
    plan: Plan
    train: bool
    length: int
    seed: int
    rank: int
    serves: int = 1
    share: int | None = None
    base_epoch: int = 0
    base_position: int = 0
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    image_size: int = 224
    resize_size: int | None = None
    content_box: bool = False  # eval: the centre crop inside each image's content box (index content_box)

    def __post_init__(self) -> None:
        check_serving(self.serves, self.share)
        if self.length < 0 or self.image_size < 1:
            raise ValueError(f"length={self.length} and image_size={self.image_size} must be >= 0 and >= 1")


class DecodeSource:
    """The base of a decode source: the settings' values as attributes, and the two flags `build_pipeline` branches
    on. Subclasses define `outputs` (the names of what a call returns) and `__call__` (DALI's SampleInfo or
    BatchInfo -> those outputs; StopIteration past `length`)."""

    batched: bool = False  # True: called once a batch in the pipeline's thread; False: once a sample, in workers
    decodes: bool = False  # True: hands over decoded (size, size, 3) uint8 images; False: JPEG bytes for DALI
    continuous: bool = False  # True: the stream runs on across epochs, never raising StopIteration (BatchPlan)

    def __init__(self, settings: SourceSettings):
        s = self.settings = settings
        self.store = s.store
        self.planner = s.plan
        self.train = bool(s.train)
        self.length = int(s.length)
        self.seed = int(s.seed)
        self.rank = int(s.rank)
        self.serves, self.share = int(s.serves), s.share
        self.base_epoch = int(s.base_epoch)
        self.base_position = int(s.base_position)
        self.image_size = int(s.image_size)
        self.resize_size = eval_resize_size(self.image_size, s.resize_size)
        self.content_box = bool(s.content_box)  # eval: centre crop inside the content box (turbo.centre_box_within)

    @property
    def outputs(self) -> tuple[str, ...]:
        raise NotImplementedError

    def __call__(self, info: Any) -> tuple[Any, ...]:
        raise NotImplementedError

    def bad(self, index: int, exc: Exception) -> fmt.FormatError:
        """The error of image `index` the CPU decoder refused: a FormatError naming its shard and key."""
        return fmt.FormatError(f"{self.store.dataset.root}: {self.store.where(index)}: cannot decode: {exc}")
