"""The loaders of `tagstream bench loader --peers`, each opened on its own format of the same JPEG bytes with the
same settings (RandomResizedCrop to `image_size` with scale (0.08, 1) and ratio (3/4, 4/3), a horizontal flip
with probability 1/2, uint8 out, `batch_size` images a batch, `workers` worker processes or threads), as a
function epoch -> iterator of (images, sample indices). The peers are imported here only, inside the functions."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from tagstream.tools.bench.peers.formats import file_path

# Our epoch as the peers read theirs: one pass, every image once (LoaderConfig.one_pass; the last global batch
# filled up from the epoch's start, so every batch is full)
OURS_EPOCH: dict[str, Any] = {"sampling": "natural", "one_pass": True}

Epochs = Callable[[int], Iterator[tuple[Any, Any]]]


@dataclass(frozen=True)
class PeerRun:
    """What every contender of one run shares."""

    dataset: str  # our bench dataset
    cache: str  # the folder of the peers' formats (formats.prepare_formats)
    images: int
    batch_size: int
    workers: int
    image_size: int
    seed: int = 0


def _pil_transform(size: int):
    from torchvision.transforms import v2

    return v2.Compose(
        [v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True), v2.RandomHorizontalFlip(), v2.PILToTensor()]
    )


def _pil_rgb(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def _torch_epochs(dataset: Any, run: PeerRun, **kw: Any) -> Epochs:
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=run.batch_size, num_workers=run.workers, **kw)

    def epochs(epoch: int) -> Iterator[tuple[Any, Any]]:
        torch.manual_seed(run.seed + epoch)
        yield from loader

    return epochs


class _FilesPIL:
    """torch Dataset over the image files: Pillow decode, torchvision v2 on the PIL image."""

    def __init__(self, run: PeerRun):
        self.root, self.n, self.transform = run.cache, run.images, _pil_transform(run.image_size)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.transform(_pil_rgb(file_path(self.root, i).read_bytes())), i


class _FilesTorchvision(_FilesPIL):
    """The same files decoded by torchvision.io.decode_jpeg (libjpeg-turbo), v2 on the uint8 tensor."""

    def __init__(self, run: PeerRun):
        from torchvision.transforms import v2

        super().__init__(run)
        self.transform = v2.Compose(
            [v2.RandomResizedCrop(run.image_size, scale=(0.08, 1.0), antialias=True), v2.RandomHorizontalFlip()]
        )

    def __getitem__(self, i: int):
        from torchvision.io import decode_jpeg, read_file

        return self.transform(decode_jpeg(read_file(str(file_path(self.root, i))))), i


def open_dataloader(run: PeerRun) -> Epochs:
    return _torch_epochs(_FilesPIL(run), run, shuffle=True)


def open_torchvision(run: PeerRun) -> Epochs:
    return _torch_epochs(_FilesTorchvision(run), run, shuffle=True)


def open_webdataset(run: PeerRun) -> Epochs:
    import webdataset as wds

    tars = sorted(str(p) for p in (Path(run.cache) / "webdataset").glob("shard-*.tar"))
    transform = _pil_transform(run.image_size)
    dataset = (
        wds.WebDataset(tars, shardshuffle=len(tars), workersplitter=wds.split_by_worker, empty_check=False)
        .shuffle(500)
        .decode("pil")
        .to_tuple("jpg", "cls")
        .map_tuple(transform, int)
    )
    return _torch_epochs(dataset, run)


def _mds_images(local: str, run: PeerRun):
    """Mosaic Streaming's dataset over the MDS shards, decoding and augmenting each sample."""
    from streaming import StreamingDataset

    class Images(StreamingDataset):
        def __getitem__(self, i: int):
            sample = super().__getitem__(i)
            return self.transform(_pil_rgb(sample["jpeg"])), int(sample["index"])

    images = Images(local=local, shuffle=True, batch_size=run.batch_size, shuffle_seed=run.seed)
    images.transform = _pil_transform(run.image_size)
    return images


def open_streaming(run: PeerRun) -> Epochs:
    return _torch_epochs(_mds_images(str(Path(run.cache) / "mds"), run), run)


class _LitSample:
    """LitData's per-item transform: decode and augment."""

    def __init__(self, size: int):
        self.transform = _pil_transform(size)

    def __call__(self, item: dict):
        return self.transform(_pil_rgb(item["jpeg"])), int(item["index"])


def open_litdata(run: PeerRun) -> Epochs:
    from litdata import StreamingDataLoader, StreamingDataset

    path = str(Path(run.cache) / "litdata")
    dataset = StreamingDataset(path, shuffle=True, seed=run.seed, transform=_LitSample(run.image_size))
    loader = StreamingDataLoader(dataset, batch_size=run.batch_size, num_workers=run.workers)

    def epochs(epoch: int) -> Iterator[tuple[Any, Any]]:
        yield from loader

    return epochs


def open_ffcv(run: PeerRun) -> Epochs:
    from ffcv.fields.decoders import IntDecoder, RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, ToTensor

    from tagstream.tools.bench.peers.ffcv_field import JpegBytesField

    size = run.image_size
    loader = Loader(
        str(Path(run.cache) / "beton" / "data.beton"),
        batch_size=run.batch_size,
        num_workers=run.workers,
        order=OrderOption.RANDOM,
        os_cache=True,
        seed=run.seed,
        custom_fields={"image": JpegBytesField},
        pipelines={
            "image": [RandomResizedCropRGBImageDecoder((size, size)), RandomHorizontalFlip(), ToTensor()],
            "index": [IntDecoder(), ToTensor()],
        },
    )

    def epochs(epoch: int) -> Iterator[tuple[Any, Any]]:
        for images, index in loader:
            yield images, index.reshape(-1)

    return epochs


def open_ours(run: PeerRun) -> Epochs:
    from tagstream.loader import LoaderConfig, build_loader
    from tagstream.tools.bench.loader import VOCAB

    config = LoaderConfig(
        dataset=run.dataset,
        vocab=VOCAB,
        mode="train",
        batch_size=run.batch_size,
        image_size=run.image_size,
        workers=run.workers,
        threads=1,  # the workers decode; DALI's threads only batch
        prefetch=2,
        seed=run.seed,
        **OURS_EPOCH,
    )
    loader = build_loader(config)

    def epochs(epoch: int) -> Iterator[tuple[Any, Any]]:
        loader.set_epoch(epoch)
        for images, _targets, indices in loader:
            yield images, indices

    return epochs


LOADERS: dict[str, tuple[str, Callable[[PeerRun], Epochs], str | None, str | None]] = {
    # name: (label, opener, the module it needs, its format)
    "ours": ("tagstream (build_loader, C window decoder)", open_ours, None, None),
    "ffcv": ("FFCV (.beton, RandomResizedCropRGBImageDecoder)", open_ffcv, "ffcv", "beton"),
    "dataloader": ("DataLoader over files, PIL + torchvision v2", open_dataloader, None, "files"),
    "streaming": ("Mosaic Streaming (MDS + DataLoader + v2)", open_streaming, "streaming", "mds"),
    "litdata": ("LitData (optimize + StreamingDataLoader + v2)", open_litdata, "litdata", "litdata"),
    "webdataset": ("WebDataset (tars + DataLoader + v2)", open_webdataset, "webdataset", "webdataset"),
    "torchvision": ("DataLoader + torchvision.io.decode_jpeg + v2", open_torchvision, None, "files"),
}
PEERS = tuple(name for name in LOADERS if name != "ours")


def as_hwc(images: Any) -> np.ndarray:
    """A batch as an (n, h, w, 3) uint8 NumPy array, from NHWC or NCHW, torch or NumPy."""
    array = images.cpu().numpy() if hasattr(images, "cpu") else np.asarray(images)
    if array.ndim == 4 and array.shape[1] == 3 and array.shape[-1] != 3:
        array = array.transpose(0, 2, 3, 1)
    return array
