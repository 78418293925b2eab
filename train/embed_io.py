"""Embedding files: features (N, D) float32 and their dataset indices (N,) int64, as .npy, .npz or
.safetensors, written atomically; per-rank parts and their join.

safetensors is written by a small writer here rather than the `safetensors` package (not a
dependency): the format is an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the raw little-endian row-major bytes
(https://github.com/huggingface/safetensors#format). `.npy` writes the features to FILE and the
indices beside it to FILE with the suffix `.indices.npy`.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

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


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write tensors (C-contiguous little-endian copies are made) in the safetensors layout."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    arrays = []
    offset = 0
    for name, array in tensors.items():
        a = np.ascontiguousarray(array)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        code = _ST_DTYPES.get(a.dtype.str)
        if code is None:
            raise ValueError(f"tensor {name!r}: dtype {a.dtype} is not one of {sorted(_ST_DTYPES)}")
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the spec allows trailing spaces; 8-byte alignment of the data
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for a in arrays:
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
    path = Path(path)
    suffix = check_suffix(path)
    features = np.ascontiguousarray(features, dtype="<f4")
    indices = np.ascontiguousarray(indices, dtype="<i8")
    if features.ndim != 2 or indices.shape != (features.shape[0],):
        raise ValueError(f"features {features.shape} and indices {indices.shape} must be (N, D) and (N,)")
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if suffix == ".npy":
        for target, array in ((indices_path(path), indices), (path, features)):
            tmp = _tmp(target)
            np.save(tmp, array)
            os.replace(tmp, target)
            written.append(target)
        return written
    tmp = _tmp(path)
    if suffix == ".npz":
        np.savez(tmp, features=features, indices=indices)
    else:
        write_safetensors(tmp, {"features": features, "indices": indices}, metadata)
    os.replace(tmp, path)
    return [path]


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


def part_path(path: str | Path, rank: int, world: int) -> Path:
    path = Path(path)
    return path.with_name(f"{path.name}.part-{rank:05d}-of-{world:05d}.npz")


def join_parts(
    path: str | Path, world: int, *, expected: NDArray[np.int64], metadata: dict[str, str] | None = None
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Join the ranks' part files into one file in dataset order, then remove the parts.

    Every index of `expected` must appear; an index delivered twice (a padded last batch) must carry
    the same features both times and is kept once. Anything else is an error naming what is wrong.
    """
    feats, idx = [], []
    for rank in range(world):
        p = part_path(path, rank, world)
        if not p.exists():
            raise FileNotFoundError(f"embedding part of rank {rank} is missing: {p}")
        with np.load(p) as z:
            if z["indices"].shape[0]:  # a rank with no image (world > images) wrote an empty part
                feats.append(z["features"])
                idx.append(z["indices"])
    features = np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)
    indices = np.concatenate(idx).astype(np.int64) if idx else np.zeros(0, np.int64)
    order = np.argsort(indices, kind="stable")
    indices, features = indices[order], features[order]
    keep = np.ones(len(indices), dtype=bool)
    keep[1:] = indices[1:] != indices[:-1]
    dup = np.flatnonzero(~keep)
    if dup.size and not np.allclose(features[dup], features[dup - 1], rtol=1e-4, atol=1e-5):
        raise ValueError(f"image {int(indices[dup[0]])} was embedded twice with different features")
    indices, features = indices[keep], features[keep]
    expected = np.asarray(expected, dtype=np.int64)
    if not np.array_equal(indices, np.sort(expected)):
        missing = np.setdiff1d(expected, indices)
        extra = np.setdiff1d(indices, expected)
        raise ValueError(
            f"embedding parts do not cover the dataset: {missing.size} images missing "
            f"(first {missing[:5].tolist()}), {extra.size} unexpected (first {extra[:5].tolist()})"
        )
    save_embeddings(path, features, indices, metadata=metadata)
    for rank in range(world):
        part_path(path, rank, world).unlink()
    return features, indices
