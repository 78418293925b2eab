"""Matched (train, eval) pairs: one record per pair whichever methods found it, merged from the hash join,
the embedding join and the same-bytes check, and their file TRAIN/masks/NAME.pairs.tsv (one line per pair).

Every pair carries both scores where they can be had (the pHash distance always: every dataset has its
hashes; the cosine similarity when features were given, NaN otherwise), so a reader can see how close a
pair found by one method is under the other.

The file is written and read in chunks straight from and into NumPy columns (`write_pairs`,
`read_pair_columns`): tens of bytes a pair in memory, never a Python object per pair (at 10^6 training images
a self-similar collection gave 10^7 pairs); `read_pairs` gives rows for the callers that want them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from tagstream.kernels.phash import hamming
from tagstream.loader.data import format as fmt

_COLUMNS = "train_index\teval_dataset\teval_index\tdistance\tsimilarity\texact\tmirrored\thash\tembed"
# the content boxes each side was hashed in, "left,top,right,bottom"; files written before them lack the columns
PAIRS_HEADER = _COLUMNS + "\ttrain_box\teval_box\n"
CHUNK = 1 << 16  # pairs formatted or parsed per round: the Python objects alive at once


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


def _keys(found: Sequence[tuple[NDArray[np.int64], NDArray[np.int64]]], n: int) -> NDArray[np.int64]:
    """Sorted unique keys train * n + eval of (train, eval) index arrays."""
    return np.unique(np.concatenate([np.zeros(0, np.int64), *(t.astype(np.int64) * n + e for t, e in found)]))


def _distances(ti, ei, train_hash, eval_hash, mirror_hash) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """(pHash distance, nearer when mirrored) per pair, CHUNK pairs at a time (the gathered hashes of all pairs
    at once would cost 32 bytes a pair more)."""
    d = np.empty(ti.shape[0], np.int64)
    mirrored = np.zeros(ti.shape[0], np.bool_)
    for s in range(0, ti.shape[0], CHUNK):
        part = slice(s, s + CHUNK)
        th = train_hash[ti[part]]
        d[part] = hamming(th, eval_hash[ei[part]])
        if mirror_hash is not None:
            dm = hamming(th, mirror_hash[ei[part]])
            mirrored[part] = dm < d[part]
            d[part] = np.minimum(d[part], dm)
    return d, mirrored


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
    (train, eval, similarity; each pair once) and the same-bytes pairs. The distance is recomputed from the hashes
    (the smaller of direct and mirrored); the similarity is the join's where it found the pair, else
    similarity_of(train indices, eval indices) when features exist, else NaN. Memory: the pairs' columns plus
    a few int64 key arrays, no object per pair."""
    n = n_eval + 1
    found = {
        "hash": _keys([(t, e) for t, e, *_ in hash_found], n),
        "embed": _keys([embed_found[:2]] if embed_found is not None else [], n),
        "exact": _keys([exact], n),
    }
    keys = np.union1d(np.union1d(found["hash"], found["embed"]), found["exact"])
    flags = {}
    for method, k in found.items():  # every key of a method is among `keys`: its position marks the pair
        flags[method] = np.zeros(keys.shape[0], np.bool_)
        flags[method][np.searchsorted(keys, k)] = True
    # where the join's own cosines go (found in join order)
    embed_at = (
        None if embed_found is None else np.searchsorted(keys, embed_found[0].astype(np.int64) * n + embed_found[1])
    )
    del found  # O(pairs) int64 each: freed before the columns are made
    ti, ei = np.divmod(keys, n)
    del keys
    d, mirrored = _distances(ti, ei, train_hash, eval_hash, mirror_hash)
    sim = np.full(ti.shape[0], np.nan, np.float32)
    if similarity_of is not None:
        rest = np.flatnonzero(~flags["embed"])  # the join's own cosine for the pairs it found
        if rest.size:
            sim[rest] = similarity_of(ti[rest], ei[rest])
    if embed_at is not None:
        sim[embed_at] = embed_found[2]
    return Pairs(ti, ei, d, sim, flags["exact"], mirrored, flags["hash"], flags["embed"])


def write_pairs(
    path: Path,
    results: Sequence[Pairs],
    labels: Sequence[str],
    *,
    train_boxes: Callable[[NDArray[np.int64]], NDArray[np.int64]],
    eval_boxes: Sequence[NDArray[np.int64]],
    chunk: int = CHUNK,
) -> None:
    """One line per pair, `chunk` pairs formatted at a time straight from the columns. train_boxes(indices):
    the (n, 4) content boxes of training images (Dataset.content_boxes); eval_boxes: per evaluation set, (M, 4)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(PAIRS_HEADER)
        for p, label, boxes in zip(results, labels, eval_boxes):
            label = label.replace("{", "{{").replace("}", "}}")  # a literal in the line's format string
            line = "{}\t" + label + "\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{},{},{},{}\t{},{},{},{}\n"
            for s in range(0, len(p), chunk):
                part = slice(s, s + chunk)
                sims = [f"{v:.6f}" if v == v else "" for v in p.similarity[part].tolist()]  # NaN: no features
                flags = (c[part].astype(np.int8).tolist() for c in (p.exact, p.mirrored, p.by_hash, p.by_embed))
                tb, eb = train_boxes(p.train[part]), boxes[p.eval[part]]
                columns = (p.train[part].tolist(), p.eval[part].tolist(), p.distance[part].tolist(), sims, *flags)
                f.write("".join(map(line.format, *columns, *tb.T.tolist(), *eb.T.tolist())))
    tmp.replace(path)


@dataclass(frozen=True)
class PairTable:
    """A pairs file as columns, in file order (read_pair_columns): tens of bytes a pair, no object per pair."""

    labels: tuple[str, ...]  # the evaluation sets' labels, in order of first appearance
    eval_dataset: NDArray[np.int32]  # index into labels
    train: NDArray[np.int64]
    eval: NDArray[np.int64]
    distance: NDArray[np.int8]
    similarity: NDArray[np.float64]  # NaN: no features were given (the file's empty field)
    exact: NDArray[np.bool_]
    mirrored: NDArray[np.bool_]
    by_hash: NDArray[np.bool_]
    by_embed: NDArray[np.bool_]
    train_box: NDArray[np.int32] | None  # (n, 4); None: a pairs file written before the boxes
    eval_box: NDArray[np.int32] | None

    def __len__(self) -> int:
        return int(self.train.shape[0])

    def rows(self) -> list[PairRow]:
        """The pairs as PairRow tuples (a Python object per pair: for small files)."""
        n = len(self)
        sims = [None if v != v else v for v in self.similarity.tolist()]
        boxes = [[None] * n if b is None else list(map(tuple, b.tolist())) for b in (self.train_box, self.eval_box)]
        columns = (self.train, self.eval, self.distance, self.exact, self.mirrored, self.by_hash, self.by_embed)
        i, j, d, x, m, h, e = (c.tolist() for c in columns)
        label = [self.labels[k] for k in self.eval_dataset.tolist()]
        return list(map(PairRow, i, label, j, d, sims, x, m, h, e, *boxes))


def _count_lines(path: Path) -> int:
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            lines, last = lines + block.count(b"\n"), block[-1:]
    return lines + (last != b"\n")  # a last line without its newline still counts


def _empty_table(n: int, *, boxes: bool) -> PairTable:
    def box():
        return np.zeros((n, 4), np.int32) if boxes else None

    return PairTable(
        labels=(),
        eval_dataset=np.zeros(n, np.int32),
        train=np.zeros(n, np.int64),
        eval=np.zeros(n, np.int64),
        distance=np.zeros(n, np.int8),
        similarity=np.zeros(n, np.float64),
        exact=np.zeros(n, np.bool_),
        mirrored=np.zeros(n, np.bool_),
        by_hash=np.zeros(n, np.bool_),
        by_embed=np.zeros(n, np.bool_),
        train_box=box(),
        eval_box=box(),
    )


def read_pair_columns(path: str | Path, *, chunk: int = CHUNK) -> PairTable:
    """Parse a pairs file into columns, `chunk` lines at a time into arrays sized by a first pass counting the
    lines: memory is the columns plus one chunk. A malformed line is a FormatError naming the file and line."""
    path = Path(path)
    n = max(_count_lines(path) - 1, 0)
    with open(path, encoding="utf-8", newline="\n") as f:  # lines end at "\n" only, as _count_lines counts them
        header = f.readline()
        if header not in (PAIRS_HEADER, _COLUMNS + "\n"):
            raise fmt.FormatError(f"{path}: not a tagstream dedup pairs file (header differs)")
        width = header.count("\t") + 1
        t = _empty_table(n, boxes=width == PAIRS_HEADER.count("\t") + 1)
        labels: dict[str, int] = {}
        s = 0
        while lines := list(islice(f, chunk)):
            if s + len(lines) > n:
                raise fmt.FormatError(f"{path}: changed while being read")
            try:
                _parse(lines, width, labels, t, slice(s, s + len(lines)))
            except (ValueError, OverflowError) as exc:  # a field that is not its number, a box not of four
                raise fmt.FormatError(
                    f"{path}: a malformed line among lines {s + 2}-{s + len(lines) + 1}: {exc}"
                ) from None
            s += len(lines)
    if s != n:
        raise fmt.FormatError(f"{path}: changed while being read")
    return replace(t, labels=tuple(labels))


def _parse(lines: list[str], width: int, labels: dict[str, int], t: PairTable, part: slice) -> None:
    fields = next((n + 1 for n in (line.count("\t") for line in lines) if n != width - 1), None)
    if fields is not None:
        raise ValueError(f"{fields} fields, expected {width}")
    # one split of the whole chunk, then every width-th field: no list per line
    flat = "".join(lines).replace("\n", "\t").split("\t")
    i, label, j, d, sim, x, m, h, e, *b = (flat[k : len(lines) * width : width] for k in range(width))
    t.eval_dataset[part] = [labels.setdefault(v, len(labels)) for v in label]
    t.train[part], t.eval[part], t.distance[part] = (np.array(c, np.int64) for c in (i, j, d))
    t.similarity[part] = np.array([v or "nan" for v in sim], np.float64)
    for column, values in zip((t.exact, t.mirrored, t.by_hash, t.by_embed), (x, m, h, e)):
        column[part] = np.array(values) == "1"
    for column, values in zip((t.train_box, t.eval_box), b):
        column[part] = np.array(",".join(values).split(","), np.int64).reshape(-1, 4)


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
    """Parse a pairs file back into its rows (for small files: read_pair_columns for large ones)."""
    return read_pair_columns(path).rows()
