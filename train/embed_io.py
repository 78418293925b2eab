"""Embedding files: features (N, D) float32 and their dataset indices (N,) int64, as .npy, .npz or
.safetensors, written atomically; rows written as they come (EmbeddingWriter); per-rank parts and their join.

safetensors is written by a small writer here rather than the `safetensors` package (not a
dependency): the format is an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the raw little-endian row-major bytes
(https://github.com/huggingface/safetensors#format). `.npy` writes the features to FILE and the
indices beside it to FILE with the suffix `.indices.npy`.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

SUFFIXES = (".npy", ".npz", ".safetensors")
_ST_DTYPES = {"<f4": "F32", "<f8": "F64", "<i8": "I64", "<i4": "I32", "|u1": "U8", "<f2": "F16"}
_ST_NUMPY = {v: k for k, v in _ST_DTYPES.items()}


def check_suffix(path: str | Path) -> str:
    suffix = Path(path).suffix
    if suffix not in SUFFIXES:
        raise ValueError(f"embedding file {str(path)!r}: suffix {suffix!r} is not one of {SUFFIXES}")
    return suffix


def indices_path(path: str | Path) -> Path:
    """Where a .npy embedding file keeps its indices."""
    path = Path(path)
    return path.with_name(path.name[: -len(".npy")] + ".indices.npy")


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")


def _safetensors_header(shapes: dict[str, tuple[np.dtype, tuple[int, ...]]], metadata: dict[str, str] | None) -> bytes:
    """The length prefix and JSON header of tensors (name -> (little-endian dtype, shape)) laid out in order."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, (dtype, shape) in shapes.items():
        code = _ST_DTYPES.get(dtype.str)
        if code is None:
            raise ValueError(f"tensor {name!r}: dtype {dtype} is not one of {sorted(_ST_DTYPES)}")
        nbytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the spec allows trailing spaces; 8-byte alignment of the data
    return struct.pack("<Q", len(raw)) + raw


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write tensors (C-contiguous little-endian copies are made) in the safetensors layout."""
    arrays = {}
    for name, array in tensors.items():
        a = np.ascontiguousarray(array)
        arrays[name] = a.astype(a.dtype.newbyteorder("<"), copy=False)
    head = _safetensors_header({k: (a.dtype, a.shape) for k, a in arrays.items()}, metadata)
    with open(path, "wb") as f:
        f.write(head)
        for a in arrays.values():
            f.write(a.tobytes())


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file into NumPy arrays; (tensors, metadata)."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} runs past the end of the file")
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    body = memoryview(data)[8 + n :]
    metadata = header.pop("__metadata__", {}) or {}
    out = {}
    for name, info in header.items():
        if info["dtype"] not in _ST_NUMPY:
            raise ValueError(f"{path}: tensor {name!r} dtype {info['dtype']} is not one of {sorted(_ST_NUMPY)}")
        begin, end = info["data_offsets"]
        dtype = np.dtype(_ST_NUMPY[info["dtype"]])
        if end > len(body) or (end - begin) != dtype.itemsize * int(np.prod(info["shape"], dtype=np.int64)):
            raise ValueError(f"{path}: tensor {name!r} byte range {begin}:{end} does not match its shape")
        out[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(info["shape"]).copy()
    return out, metadata


def save_embeddings(
    path: str | Path,
    features: NDArray[np.float32],
    indices: NDArray[np.int64],
    *,
    metadata: dict[str, str] | None = None,
) -> list[Path]:
    """Write one embedding file (format from the suffix) atomically; returns the paths written."""
    with EmbeddingWriter(path, metadata=metadata) as out:
        out.append(features, indices)
        return out.close()


def load_embeddings(path: str | Path) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """(features, indices) from any of the supported formats."""
    path = Path(path)
    suffix = check_suffix(path)
    if suffix == ".npy":
        return np.load(path), np.load(indices_path(path))
    if suffix == ".npz":
        with np.load(path) as z:
            return z["features"], z["indices"]
    tensors, _ = read_safetensors(path)
    return tensors["features"], tensors["indices"]


class EmbeddingWriter:
    """Rows written as they come: append(features (n, D), indices (n,)) spools them to two raw files beside `path`,
    close() writes `path` in its suffix's format by copying the spools in chunks and removes them, so memory is
    one batch and one copy buffer whatever N (disk: the output twice until close). Rows stay in append order.
    abort() removes the spools and writes nothing; as a context manager, close on success and abort on error."""

    def __init__(self, path: str | Path, *, metadata: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.suffix = check_suffix(self.path)
        self.metadata = metadata
        self.rows = 0
        self.dim: int | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._spools = (_tmp(self.path.with_suffix(".features")), _tmp(self.path.with_suffix(".indices")))
        self._files: list[BinaryIO] | None = [open(p, "wb") for p in self._spools]

    def __enter__(self) -> EmbeddingWriter:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None and self._files is not None:
            self.close()
        else:
            self.abort()

    def append(self, features: NDArray[np.floating], indices: NDArray[np.integer]) -> None:
        if self._files is None:
            raise ValueError(f"{self.path}: the writer is closed")
        features = np.ascontiguousarray(features, dtype="<f4")
        indices = np.ascontiguousarray(indices, dtype="<i8").reshape(-1)
        if features.ndim != 2 or indices.shape != (features.shape[0],):
            raise ValueError(f"features {features.shape} and indices {indices.shape} must be (n, D) and (n,)")
        if not indices.size:
            return
        if self.dim is None:
            self.dim = int(features.shape[1])
        elif features.shape[1] != self.dim:
            raise ValueError(f"{self.path}: rows of {features.shape[1]} features after rows of {self.dim}")
        for f, rows in zip(self._files, (features, indices)):
            f.write(rows.tobytes())
            f.flush()  # on disk as it comes, not in a buffer
        self.rows += int(indices.shape[0])

    def close(self) -> list[Path]:
        """Write the file (format from the suffix) atomically; returns the paths written."""
        if self._files is None:
            raise ValueError(f"{self.path}: the writer is closed")
        for f in self._files:
            f.close()
        self._files = None
        shapes = {"features": (np.dtype("<f4"), (self.rows, self.dim or 0)), "indices": (np.dtype("<i8"), (self.rows,))}
        spools = dict(zip(shapes, self._spools))
        try:
            if self.suffix == ".npy":
                targets = {"indices": indices_path(self.path), "features": self.path}
                for name in ("indices", "features"):
                    tmp = _tmp(targets[name])
                    with open(tmp, "wb") as out:
                        _copy_npy(out, *shapes[name], spools[name])
                    os.replace(tmp, targets[name])
                return [targets["indices"], targets["features"]]
            tmp = _tmp(self.path)
            if self.suffix == ".npz":  # numpy's own layout: one stored (uncompressed) NAME.npy member per array
                with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
                    for name, (dtype, shape) in shapes.items():
                        with z.open(f"{name}.npy", "w", force_zip64=True) as out:
                            _copy_npy(out, dtype, shape, spools[name])
            else:
                with open(tmp, "wb") as out:
                    out.write(_safetensors_header(shapes, self.metadata))
                    for name in shapes:
                        _copy(spools[name], out)
            os.replace(tmp, self.path)
            return [self.path]
        finally:
            self._remove_spools()

    def abort(self) -> None:
        if self._files is not None:
            for f in self._files:
                f.close()
            self._files = None
        self._remove_spools()

    def _remove_spools(self) -> None:
        for p in self._spools:
            p.unlink(missing_ok=True)


def _copy_npy(out: BinaryIO, dtype: np.dtype, shape: tuple[int, ...], raw: Path) -> None:
    """An .npy stream: the header of a C-order array of `dtype` and `shape`, then the raw bytes of file `raw`."""
    np.lib.format.write_array_header_1_0(out, {"descr": dtype.str, "fortran_order": False, "shape": shape})
    _copy(raw, out)


def _copy(raw: Path, out: BinaryIO) -> None:
    with open(raw, "rb") as f:
        shutil.copyfileobj(f, out, 1 << 22)


def part_path(path: str | Path, rank: int, world: int) -> Path:
    path = Path(path)
    return path.with_name(f"{path.name}.part-{rank:05d}-of-{world:05d}.npz")


def join_parts(
    path: str | Path, world: int, *, expected: NDArray[np.int64], metadata: dict[str, str] | None = None
) -> tuple[int, int]:
    """Join the ranks' part files into one file in dataset order, then remove the parts; returns (images, D).

    Every index of `expected` must appear; an index delivered twice (a padded last batch) must carry
    the same features both times and is kept once. Anything else is an error naming what is wrong.
    Memory: every part's indices (8 bytes an image) and one part's features at a time when the parts follow
    each other in dataset order, as `embed`'s contiguous shares do; parts that interleave are joined in memory.
    """
    paths = [part_path(path, rank, world) for rank in range(world)]
    for rank, p in enumerate(paths):
        if not p.exists():
            raise FileNotFoundError(f"embedding part of rank {rank} is missing: {p}")
    idx = []
    for p in paths:
        with np.load(p) as z:
            idx.append(z["indices"].astype(np.int64).reshape(-1))
    indices = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    in_order = bool(np.all(indices[1:] >= indices[:-1]))
    order = np.arange(len(indices)) if in_order else np.argsort(indices, kind="stable")
    ordered = indices[order]
    keep = np.ones(len(ordered), dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    expected = np.asarray(expected, dtype=np.int64)
    if not np.array_equal(ordered[keep], np.sort(expected)):
        missing = np.setdiff1d(expected, ordered)
        extra = np.setdiff1d(ordered, expected)
        raise ValueError(
            f"embedding parts do not cover the dataset: {missing.size} images missing "
            f"(first {missing[:5].tolist()}), {extra.size} unexpected (first {extra[:5].tolist()})"
        )
    blocks = _part_features(paths, idx) if in_order else [_all_features(paths, idx)[order]]
    with EmbeddingWriter(path, metadata=metadata) as out:
        start, previous = 0, None
        for features in blocks:
            stop = start + len(features)
            _check_repeats(features, ordered[start:stop], keep[start:stop], previous)
            out.append(features[keep[start:stop]], ordered[start:stop][keep[start:stop]])
            if len(features):
                previous = (ordered[stop - 1], features[-1])
            start = stop
        images, dim = out.rows, out.dim or 0
    for p in paths:
        p.unlink()
    return images, dim


def _part_features(paths: list[Path], idx: list[NDArray[np.int64]]):
    """Each part's features in turn (a part with no image wrote a (0, 0) array)."""
    for p, i in zip(paths, idx):
        if i.size:
            with np.load(p) as z:
                yield z["features"]


def _all_features(paths: list[Path], idx: list[NDArray[np.int64]]) -> NDArray[np.float32]:
    feats = list(_part_features(paths, idx))
    return np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)


def _check_repeats(features, indices, keep, previous) -> None:
    """A row whose index repeats the row before (the last row of the block before: `previous`) must carry the same
    features, else an error naming the image."""
    dup = np.flatnonzero(~keep)
    if not dup.size:
        return
    before = np.empty_like(features[dup])
    inside = dup > 0
    before[inside] = features[dup[inside] - 1]
    if not inside.all():  # the block's first row repeats the previous block's last
        before[~inside] = previous[1]
    same = np.isclose(features[dup], before, rtol=1e-4, atol=1e-5).all(axis=1)
    if not same.all():
        raise ValueError(f"image {int(indices[dup[~same][0]])} was embedded twice with different features")
