"""De-duplicate a training dataset against evaluation datasets: mask every training image that is a near
copy (perceptual-hash distance <= D) or an exact copy (same stored bytes) of an evaluation image.

Writes, under TRAIN/masks/: NAME.npy (bool (N,), True = excluded; no data is deleted), NAME.pairs.tsv
(one line per matched pair) and NAME.summary.json. The pHash join reads only the memory-mapped index;
the exact-bytes check reads every record once (O(data), a one-off; `exact=False` skips it): stored
images carry no content hash, and pHash distance 0 does not mean same bytes. pHash does not survive a
left-right flip; `mirrors=True` also joins against the hashes of the flipped evaluation images (decoded
once each: cheap for evaluation-sized sets).
"""

from __future__ import annotations

import hashlib
import io
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tagstream.kernels import dedup as kdedup
from tagstream.kernels.phash import hamming
from tagstream.loader import format as fmt
from tagstream.loader.dataset import Dataset
from tagstream.loader.writer import write_mask

# chosen from `tagstream bench dedup` (1,000 photo-like images): the smallest D with recall >= 0.95 on
# every main edit (crops of up to 5% need it) and no false match among 499,500 distinct pairs
DEFAULT_MAX_DISTANCE = 10
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PAIRS_HEADER = "train_index\teval_dataset\teval_index\tdistance\texact\tmirrored\n"


@dataclass(frozen=True)
class Pairs:
    """Matched pairs against one evaluation dataset, sorted by (train, eval)."""

    train: NDArray[np.int64]
    eval: NDArray[np.int64]
    distance: NDArray[np.int64]  # pHash distance (also for exact copies; to the mirror where that is nearer)
    exact: NDArray[np.bool_]  # same stored bytes
    mirrored: NDArray[np.bool_]  # nearer to the evaluation image flipped left-right (with mirrors=True)


def mask_paths(train: Path, name: str) -> tuple[Path, Path, Path]:
    """(mask, pairs, summary) paths of mask NAME in dataset TRAIN."""
    mask = fmt.mask_path(train, name)
    return mask, mask.with_name(f"{name}.pairs.tsv"), mask.with_name(f"{name}.summary.json")


def _digest(image: bytes) -> bytes:
    return hashlib.blake2b(image, digest_size=16).digest()


def iter_digests(ds: Dataset):
    """(global index, 16-byte BLAKE2b digest of the stored image bytes) for every image, in index order.

    Reads through ShardStore, so the LMDB environments are the process's shared read-only ones."""
    from tagstream.loader.store import ShardStore

    store = ShardStore(ds)
    try:
        for i in range(ds.num_images):
            yield i, _digest(store.read_image(i))
    finally:
        store.close()


def exact_pairs(train: Dataset, evals: Sequence[Dataset]) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """Per evaluation dataset, (train index, eval index) of every pair with identical image bytes.

    Evaluation digests are held in a dict (evaluation sets are small); the training set is streamed."""
    table: dict[bytes, list[tuple[int, int]]] = {}
    for e, ds in enumerate(evals):
        for j, dig in iter_digests(ds):
            table.setdefault(dig, []).append((e, j))
    found: list[list[tuple[int, int]]] = [[] for _ in evals]
    for i, dig in iter_digests(train):
        for e, j in table.get(dig, ()):
            found[e].append((i, j))
    out = []
    for rows in found:
        a = np.array(sorted(rows), np.int64).reshape(-1, 2)
        out.append((a[:, 0].copy(), a[:, 1].copy()))
    return out


def mirror_hashes(ds: Dataset) -> NDArray[np.uint64]:
    """pHash of every image flipped left-right (decodes each image: meant for evaluation sets, which are small)."""
    from PIL import Image
    from tagstream.loader.store import ShardStore
    from tagstream.tools.dedup.imagehash import phash_image

    store = ShardStore(ds)
    out = np.zeros(ds.num_images, np.uint64)
    try:
        for i in range(ds.num_images):
            try:
                with Image.open(io.BytesIO(store.read_image(i))) as img:
                    out[i] = phash_image(img.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT))
            except (OSError, ValueError) as exc:  # PIL's decode errors; a converted dataset should have none
                raise fmt.FormatError(f"{ds.root}: {store.where(i)} does not decode: {exc}") from exc
    finally:
        store.close()
    return out


def _merge(found: Sequence[tuple], train_hash: np.ndarray, eval_hash: np.ndarray, mirror_hash: np.ndarray | None,
           exact: tuple) -> Pairs:
    """Each (train, eval) pair once, from the union of the joins' pairs and the same-bytes pairs; distance is
    recomputed from the hashes: the smaller of direct and mirrored (mirrored=True when the mirror was closer)."""
    n = eval_hash.shape[0] + 1
    keys = np.unique(np.concatenate([np.zeros(0, np.int64), *(t * n + e for t, e, *_ in found), exact[0] * n + exact[1]]))
    ti, ei = keys // n, keys % n
    d = hamming(train_hash[ti], eval_hash[ei])
    mirrored = np.zeros(keys.shape[0], np.bool_)
    if mirror_hash is not None:
        dm = hamming(train_hash[ti], mirror_hash[ei])
        mirrored = dm < d
        d = np.minimum(d, dm)
    return Pairs(ti, ei, d, np.isin(keys, exact[0] * n + exact[1]), mirrored)


def eval_labels(against: Sequence[Path]) -> list[str]:
    """Short names for the evaluation datasets in the pairs file: directory names, made unique with #k."""
    labels: list[str] = []
    for p in against:
        base = Path(p).resolve().name
        label, k = base, 1
        while label in labels:
            k += 1
            label = f"{base}#{k}"
        labels.append(label)
    return labels


def run_dedup(
    train: str | Path,
    against: Sequence[str | Path],
    *,
    name: str,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    exact: bool = True,
    mirrors: bool = False,
    grid: str | Path | None = None,
    grid_pairs: int = 16,
    seed: int = 0,
) -> dict:
    """Join TRAIN's hashes against each of `against` (and, with mirrors, against the hashes of their
    left-right flipped images), write masks/NAME.{npy,pairs.tsv,summary.json} (and a grid of sample
    pairs to `grid`); returns the summary."""
    if not NAME_PATTERN.match(name or ""):
        raise ValueError(f"mask name {name!r} is not allowed: use letters, digits, '_', '.', '-' (not starting with '.')")
    if not isinstance(max_distance, int) or not 0 <= max_distance <= kdedup.MAX_DISTANCE:
        raise ValueError(f"max_distance={max_distance!r} is not allowed; allowed: integers 0..{kdedup.MAX_DISTANCE}")
    if not against:
        raise ValueError("no evaluation dataset given: pass at least one --against EVAL")
    t0 = time.perf_counter()
    train_ds = Dataset(train)
    eval_ds = [Dataset(p) for p in against]
    if any(ds.root.resolve() == train_ds.root.resolve() for ds in eval_ds):
        raise ValueError(f"{train} is also given as --against: every image would match itself")
    labels = eval_labels([Path(p) for p in against])
    train_hash = np.ascontiguousarray(train_ds.global_array("phash"))
    eval_hash = [np.ascontiguousarray(ds.global_array("phash")) for ds in eval_ds]
    exacts = exact_pairs(train_ds, eval_ds) if exact else [(np.zeros(0, np.int64), np.zeros(0, np.int64))] * len(eval_ds)
    results, per_eval = [], []
    mask = np.zeros(train_ds.num_images, np.bool_)
    for ds, label, h, ex in zip(eval_ds, labels, eval_hash, exacts):
        *direct, method = kdedup.join(train_hash, h, max_distance)
        found, hm = [direct], None
        if mirrors:
            hm = mirror_hashes(ds)
            found.append(kdedup.join(train_hash, hm, max_distance)[:3])
        pairs = _merge(found, train_hash, h, hm, ex)
        results.append(pairs)
        mask[pairs.train] = True
        per_eval.append({
            "path": str(ds.root), "label": label, "images": ds.num_images, "method": method,
            "pairs": int(pairs.train.size), "exact_pairs": int(pairs.exact.sum()), "mirrored_pairs": int(pairs.mirrored.sum()),
            "train_matched": int(np.unique(pairs.train).size), "eval_matched": int(np.unique(pairs.eval).size),
            "distance_histogram": np.bincount(pairs.distance, minlength=max_distance + 1).tolist(),
        })
    mask_path, pairs_path, summary_path = mask_paths(train_ds.root, name)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    _write_pairs(pairs_path, results, labels)
    write_mask(train_ds.root, name, mask)
    summary = {
        "name": name, "train": str(train_ds.root), "train_images": train_ds.num_images,
        "max_distance": max_distance, "exact_bytes_checked": exact, "mirrors": mirrors, "excluded": int(mask.sum()),
        "excluded_fraction": float(mask.mean()) if mask.size else 0.0, "against": per_eval,
        "mask": str(mask_path), "pairs_file": str(pairs_path), "seconds": round(time.perf_counter() - t0, 3),
    }
    if grid is not None:
        from tagstream.tools.dedup.grid import draw_grid

        summary["grid"] = draw_grid(Path(grid), train_ds, eval_ds, labels, results, count=grid_pairs, seed=seed)
    fmt.write_json_atomic(summary_path, summary)
    return summary


def _write_pairs(path: Path, results: Sequence[Pairs], labels: Sequence[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(PAIRS_HEADER)
        for pairs, label in zip(results, labels):
            columns = (pairs.train, pairs.eval, pairs.distance, pairs.exact, pairs.mirrored)
            for i, j, d, x, m in zip(*(c.tolist() for c in columns)):
                f.write(f"{i}\t{label}\t{j}\t{d}\t{int(x)}\t{int(m)}\n")
    tmp.replace(path)


def read_pairs(path: str | Path) -> list[tuple[int, str, int, int, bool, bool]]:
    """Parse a pairs file back into (train index, eval label, eval index, distance, exact, mirrored) rows."""
    rows = []
    with open(path, encoding="utf-8") as f:
        if f.readline() != PAIRS_HEADER:
            raise fmt.FormatError(f"{path}: not a tagstream dedup pairs file (header differs)")
        for line in f:
            i, label, j, d, x, m = line.rstrip("\n").split("\t")
            rows.append((int(i), label, int(j), int(d), x == "1", m == "1"))
    return rows
