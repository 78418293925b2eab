"""Matched (train, eval) pairs: one record per pair whichever methods found it, merged from the hash join,
the embedding join and the same-bytes check, and their file TRAIN/masks/NAME.pairs.tsv (one line per pair).

Every pair carries both scores where they can be had (the pHash distance always: every dataset has its
hashes; the cosine similarity when features were given, NaN otherwise), so a reader can see how close a
pair found by one method is under the other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from tagstream.kernels.phash import hamming
from tagstream.loader.data import format as fmt

_COLUMNS = "train_index\teval_dataset\teval_index\tdistance\tsimilarity\texact\tmirrored\thash\tembed"
# the content boxes each side was hashed in, "left,top,right,bottom"; files written before them lack the columns
PAIRS_HEADER = _COLUMNS + "\ttrain_box\teval_box\n"


@dataclass(frozen=True)
class Pairs:
    """Matched pairs against one evaluation dataset, sorted by (train, eval)."""

    train: NDArray[np.int64]
    eval: NDArray[np.int64]
    distance: NDArray[np.int64]  # pHash distance (to the mirror where that is nearer and mirrors were joined)
    similarity: NDArray[np.float32]  # cosine of the L2-normalised features; NaN without features
    exact: NDArray[np.bool_]  # same stored bytes
    mirrored: NDArray[np.bool_]  # nearer to the evaluation image flipped left-right (with mirrors)
    by_hash: NDArray[np.bool_]  # found by the hash join (distance <= D)
    by_embed: NDArray[np.bool_]  # found by the embedding join (similarity >= threshold)

    def __len__(self) -> int:
        return int(self.train.shape[0])


def mask_paths(train: Path, name: str) -> tuple[Path, Path, Path]:
    """(mask, pairs, summary) paths of mask NAME in dataset TRAIN."""
    d = Path(train) / fmt.MASKS_DIR
    return d / f"{name}.npy", d / f"{name}.pairs.tsv", d / f"{name}.summary.json"


def _keys(found: Sequence[tuple[NDArray[np.int64], NDArray[np.int64]]], n_eval: int) -> NDArray[np.int64]:
    return np.unique(
        np.concatenate([np.zeros(0, np.int64), *(t.astype(np.int64) * (n_eval + 1) + e for t, e in found)])
    )


def merge(
    *,
    n_eval: int,
    train_hash: NDArray[np.uint64],
    eval_hash: NDArray[np.uint64],
    mirror_hash: NDArray[np.uint64] | None,
    hash_found: Sequence[tuple],
    embed_found: tuple | None,
    exact: tuple,
    similarity_of=None,
) -> Pairs:
    """Each (train, eval) pair once, from the union of the hash joins' pairs, the embedding join's pairs
    (train, eval, similarity) and the same-bytes pairs. The distance is recomputed from the hashes (the
    smaller of direct and mirrored); the similarity is the join's where it found the pair, else
    similarity_of(train indices, eval indices) when features exist, else NaN."""
    n = n_eval + 1
    hash_keys = _keys([(t, e) for t, e, *_ in hash_found], n_eval)
    embed_keys = _keys([embed_found[:2]], n_eval) if embed_found is not None else np.zeros(0, np.int64)
    exact_keys = _keys([exact], n_eval)
    keys = np.union1d(np.union1d(hash_keys, embed_keys), exact_keys)
    ti, ei = keys // n, keys % n
    d = hamming(train_hash[ti], eval_hash[ei])
    mirrored = np.zeros(keys.shape[0], np.bool_)
    if mirror_hash is not None:
        dm = hamming(train_hash[ti], mirror_hash[ei])
        mirrored = dm < d
        d = np.minimum(d, dm)
    sim = np.full(keys.shape[0], np.nan, np.float32)
    if similarity_of is not None and keys.size:
        sim[:] = similarity_of(ti, ei)
    if embed_found is not None and embed_keys.size:
        et, ee, es = embed_found
        order = np.argsort(et.astype(np.int64) * n + ee)
        sim[np.isin(keys, embed_keys)] = np.asarray(es, np.float32)[order]  # both sides sorted by key: aligned
    return Pairs(
        ti, ei, d, sim, np.isin(keys, exact_keys), mirrored, np.isin(keys, hash_keys), np.isin(keys, embed_keys)
    )


def write_pairs(path: Path, results: Sequence[Pairs], labels: Sequence[str], boxes: Sequence[tuple]) -> None:
    """One line per pair; boxes: per evaluation set, (train boxes, eval boxes), each (pairs, 4), pair order."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(PAIRS_HEADER)
        for p, label, (tb, eb) in zip(results, labels, boxes):
            columns = (p.train, p.eval, p.distance, p.similarity, p.exact, p.mirrored, p.by_hash, p.by_embed)
            for i, j, d, s, x, m, h, e, bt, be in zip(*(c.tolist() for c in columns), tb.tolist(), eb.tolist()):
                sim = "" if math.isnan(s) else f"{s:.6f}"
                f.write(
                    f"{i}\t{label}\t{j}\t{d}\t{sim}\t{int(x)}\t{int(m)}\t{int(h)}\t{int(e)}"
                    f"\t{','.join(map(str, bt))}\t{','.join(map(str, be))}\n"
                )
    tmp.replace(path)


class PairRow(NamedTuple):
    train: int
    eval_label: str
    eval: int
    distance: int
    similarity: float | None  # None: no features were given
    exact: bool
    mirrored: bool
    by_hash: bool
    by_embed: bool
    train_box: tuple[int, ...] | None = None  # None: a pairs file written before the boxes
    eval_box: tuple[int, ...] | None = None


def read_pairs(path: str | Path) -> list[PairRow]:
    """Parse a pairs file back into its rows."""
    rows = []
    with open(path, encoding="utf-8") as f:
        if f.readline() not in (PAIRS_HEADER, _COLUMNS + "\n"):
            raise fmt.FormatError(f"{path}: not a tagstream dedup pairs file (header differs)")
        for line in f:
            i, label, j, d, s, x, m, h, e, *b = line.rstrip("\n").split("\t")
            tb, eb = (tuple(int(v) for v in box.split(",")) for box in b) if b else (None, None)
            rows.append(
                PairRow(
                    int(i),
                    label,
                    int(j),
                    int(d),
                    float(s) if s else None,
                    x == "1",
                    m == "1",
                    h == "1",
                    e == "1",
                    tb,
                    eb,
                )
            )
    return rows
