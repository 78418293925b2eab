"""The same JPEG bytes in each peer's format, written once from our bench dataset and cached: a folder of files
(DataLoader over files, torchvision.io, the full-decode ceilings), WebDataset tars, Mosaic Streaming MDS, LitData
chunks and an FFCV .beton. Every format stores the image's index as its label, so a batch names its samples."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Callable

from tagstream.loader.data.dataset import Dataset

FORMATS = ("files", "webdataset", "mds", "litdata", "beton")
# Beside each format's folder, NAME.tagstream-peers.json claims it before it is written ("complete": false) and says
# which dataset it holds once it is whole: a folder without a claim is not ours and is never removed. (Caches
# written before the claim moved beside the folder have it inside: NAME/.tagstream-peers.json.)
_STAMP = ".tagstream-peers.json"
TAR_IMAGES = 500  # images per WebDataset shard (3,000 images: 6 shards, so 2 workers split them)


def file_path(root: Path, index: int) -> Path:
    return Path(root) / "files" / f"{index:07d}.jpg"


class _Source:
    """The bench dataset's records, read once through our store: (jpeg bytes, width, height) by index."""

    def __init__(self, dataset: Dataset):
        from tagstream.loader.data.store import ShardStore

        self.dataset = dataset
        self.store = ShardStore(dataset.root)

    def __len__(self) -> int:
        return len(self.dataset)

    def jpeg(self, index: int) -> bytes:
        return self.store.read_image(index)

    def size(self, index: int) -> tuple[int, int]:
        shard, local = self.store.locate(index)
        return (
            int(self.dataset.index_array(shard, "width")[local]),
            int(self.dataset.index_array(shard, "height")[local]),
        )


def _stamp_of(dataset: Dataset) -> dict:
    return {"dataset": str(Path(dataset.root).resolve()), "images": len(dataset), "shards": len(dataset.shards)}


def prepare_formats(
    dataset: Dataset, cache: str | Path, formats: tuple[str, ...], *, echo: Callable[[str], None]
) -> dict[str, Path]:
    """Each format's folder under `cache`, written first where absent or made from another dataset; a format
    whose writer is not installed is left out (its contender then skips with the reason)."""
    cache = Path(cache)
    src = _Source(dataset)
    stamp = _stamp_of(dataset)
    done = {}
    for name in ("files", *[f for f in formats if f != "files"]):  # the others are written from the files
        folder = cache / name
        claim = cache / f"{name}{_STAMP}"
        if _read_stamp(claim) == {**stamp, "complete": True}:
            done[name] = folder
            continue
        if folder.exists() and not (claim.exists() or (folder / _STAMP).exists()):
            raise ValueError(
                f"{folder} exists and was not written by `bench loader --peers`: it is left alone; give another "
                "--peers-cache, or move it away"
            )
        if folder.exists():  # ours: another dataset's copy, or a write that was cut short
            shutil.rmtree(folder)
        cache.mkdir(parents=True, exist_ok=True)
        claim.write_text(json.dumps({**stamp, "complete": False}))  # claimed before anything is written
        folder.mkdir()
        try:
            WRITERS[name](src, folder, cache)
        except Exception as exc:  # a peer's writer missing or failing: that peer is skipped, the rest go on
            shutil.rmtree(folder, ignore_errors=True)
            claim.unlink(missing_ok=True)
            echo(f"{name}: not written ({type(exc).__name__}: {exc})")
            continue
        claim.write_text(json.dumps({**stamp, "complete": True}))
        done[name] = folder
    return done


def _read_stamp(path: Path) -> dict | None:
    """A claim's contents; None where it is missing or not ours to read (then the folder is written again)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_files(src: _Source, folder: Path, cache: Path) -> None:
    for i in range(len(src)):
        file_path(cache, i).write_bytes(src.jpeg(i))


def _write_tars(src: _Source, folder: Path, cache: Path) -> None:
    for shard, start in enumerate(range(0, len(src), TAR_IMAGES)):
        with tarfile.open(folder / f"shard-{shard:05d}.tar", "w") as tar:
            for i in range(start, min(start + TAR_IMAGES, len(src))):
                for ext, data in (("jpg", file_path(cache, i).read_bytes()), ("cls", str(i).encode())):
                    info = tarfile.TarInfo(f"{i:07d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def _write_mds(src: _Source, folder: Path, cache: Path) -> None:
    from streaming import MDSWriter

    with MDSWriter(out=str(folder), columns={"jpeg": "bytes", "index": "int"}, size_limit=1 << 26) as out:
        for i in range(len(src)):
            out.write({"jpeg": file_path(cache, i).read_bytes(), "index": i})


def _litdata_item(files: str, index: int) -> dict:
    return {"jpeg": Path(files, f"{index:07d}.jpg").read_bytes(), "index": index}


def _write_litdata(src: _Source, folder: Path, cache: Path) -> None:
    import functools
    import multiprocessing as mp

    from litdata import optimize

    shutil.rmtree(folder)  # optimize refuses a folder that exists
    method = mp.get_start_method(allow_none=True)
    try:
        optimize(
            fn=functools.partial(_litdata_item, str(cache / "files")),
            inputs=list(range(len(src))),
            output_dir=str(folder),
            chunk_bytes="64MB",
            num_workers=1,
            verbose=False,
        )
    finally:  # optimize sets the process's start method to spawn, for good: every later DataLoader would spawn
        mp.set_start_method(method, force=True)
    chunks = json.loads((folder / "index.json").read_text())["chunks"]
    if sum(c["chunk_size"] for c in chunks) != len(src):  # its workers' failures do not raise
        raise RuntimeError(f"litdata.optimize wrote {len(chunks)} chunks, not the {len(src)} images")


class _BetonItems:
    """FFCV's writer's indexed dataset (picklable: its worker processes may be spawned)."""

    def __init__(self, cache: Path, sizes: list[tuple[int, int]]):
        self.cache, self.sizes = cache, sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int):
        w, h = self.sizes[i]
        return (file_path(self.cache, i).read_bytes(), w, h), i


def _write_beton(src: _Source, folder: Path, cache: Path) -> None:
    from ffcv.fields import IntField
    from ffcv.writer import DatasetWriter

    from tagstream.tools.bench.peers.ffcv_field import JpegBytesField

    writer = DatasetWriter(str(folder / "data.beton"), {"image": JpegBytesField(), "index": IntField()}, num_workers=1)
    writer.from_indexed_dataset(_BetonItems(cache, [src.size(i) for i in range(len(src))]))


WRITERS = {
    "files": _write_files,
    "webdataset": _write_tars,
    "mds": _write_mds,
    "litdata": _write_litdata,
    "beton": _write_beton,
}
