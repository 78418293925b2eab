"""The pairs file (TRAIN/masks/NAME.pairs.tsv): the chunked writer against a line-by-line oracle of the format,
the columnar reader and read_pairs against the columns written, old files without boxes, malformed lines, and the
memory of 10^6 pairs written and read back (a child process's own peak RSS)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagstream.loader.data import format as fmt
from tagstream.tools.dedup.pairs import PAIRS_HEADER, PairRow, Pairs, merge, read_pair_columns, read_pairs, write_pairs

N_EVAL = 50  # evaluation images per set in the generated pairs


def _pairs(rng: np.random.Generator, n: int) -> Pairs:
    sim = rng.random(n).astype(np.float32) * 2 - 1
    sim[rng.random(n) < 0.3] = np.nan  # pairs without features
    keys = np.sort(rng.choice(1000 * N_EVAL, size=n, replace=False))
    flags = (rng.random((4, n)) < 0.5).astype(np.bool_)
    return Pairs(keys // N_EVAL, keys % N_EVAL, rng.integers(0, 65, n), sim, *flags)


def _train_boxes(indices: np.ndarray) -> np.ndarray:
    """Content boxes that encode the image index, as Dataset.content_boxes returns them."""
    return np.stack([indices % 7, indices % 5, 160 + indices % 3, 1000 + indices], axis=1).astype(np.int64)


def _oracle_lines(results, labels, eval_boxes) -> str:
    """The format, one pair at a time: what every pairs file ever written holds."""
    out = [PAIRS_HEADER]
    for p, label, boxes in zip(results, labels, eval_boxes):
        for k in range(len(p)):
            s = float(p.similarity[k])
            tb, eb = _train_boxes(p.train[k : k + 1])[0], boxes[p.eval[k]]
            out.append(
                f"{p.train[k]}\t{label}\t{p.eval[k]}\t{p.distance[k]}\t{'' if math.isnan(s) else f'{s:.6f}'}"
                f"\t{int(p.exact[k])}\t{int(p.mirrored[k])}\t{int(p.by_hash[k])}\t{int(p.by_embed[k])}"
                f"\t{','.join(map(str, tb.tolist()))}\t{','.join(map(str, eb.tolist()))}\n"
            )
    return "".join(out)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=3),
    chunk=st.integers(1, 9),
    seed=st.integers(0, 2**32 - 1),
    odd_label=st.sampled_from(["eval", "val{0}", "a b#2", "é}{"]),
)
def test_chunked_writer_matches_the_format_and_reads_back(tmp_path_factory, sizes, chunk, seed, odd_label):
    rng = np.random.default_rng(seed)
    results = [_pairs(rng, n) for n in sizes]
    labels = [odd_label] + [f"set#{k}" for k in range(1, len(sizes))]
    eval_boxes = [rng.integers(0, 500, (N_EVAL, 4)) for _ in sizes]
    path = tmp_path_factory.mktemp("pairs") / "m.pairs.tsv"
    write_pairs(path, results, labels, train_boxes=_train_boxes, eval_boxes=eval_boxes, chunk=chunk)
    assert path.read_text(encoding="utf-8") == _oracle_lines(results, labels, eval_boxes)

    table = read_pair_columns(path, chunk=chunk)
    assert len(table) == sum(sizes) and table.labels == tuple(labels[k] for k, n in enumerate(sizes) if n)
    for name in ("train", "eval", "distance", "exact", "mirrored", "by_hash", "by_embed"):
        np.testing.assert_array_equal(getattr(table, name), np.concatenate([getattr(p, name) for p in results]))
    similarity = np.concatenate([p.similarity for p in results]).astype(np.float64)
    np.testing.assert_allclose(table.similarity, similarity, atol=5e-7)  # six decimals in the file
    np.testing.assert_array_equal(np.isnan(table.similarity), np.isnan(similarity))
    np.testing.assert_array_equal(table.train_box, _train_boxes(table.train))
    np.testing.assert_array_equal(table.eval_box, np.concatenate([b[p.eval] for b, p in zip(eval_boxes, results)]))

    rows = read_pairs(path)
    assert [(r.train, r.eval_label, r.eval, r.exact) for r in rows] == [
        (int(t), label, int(e), bool(x))
        for p, label in zip(results, labels)
        for t, e, x in zip(p.train, p.eval, p.exact)
    ]
    assert all(type(r.similarity) is float or r.similarity is None for r in rows)
    assert [r.similarity is None for r in rows] == np.isnan(similarity).tolist()
    assert [r.train_box for r in rows] == [tuple(b) for b in _train_boxes(table.train).tolist()]


def test_a_file_written_before_the_boxes_still_reads(tmp_path):
    path = tmp_path / "old.pairs.tsv"
    header = PAIRS_HEADER.replace("\ttrain_box\teval_box", "")
    path.write_text(header + "3\teval\t7\t4\t\t0\t1\t1\t0\n12\teval\t1\t0\t0.990000\t1\t0\t1\t1\n")
    assert read_pairs(path) == [
        PairRow(3, "eval", 7, 4, None, False, True, True, False),
        PairRow(12, "eval", 1, 0, 0.99, True, False, True, True),
    ]
    table = read_pair_columns(path)
    assert table.train_box is None and table.eval_box is None and table.train.tolist() == [3, 12]


def test_an_empty_pairs_file_reads_as_no_pairs(tmp_path):
    path = tmp_path / "none.pairs.tsv"
    write_pairs(path, [], [], train_boxes=_train_boxes, eval_boxes=[])
    assert path.read_text() == PAIRS_HEADER and read_pairs(path) == [] and len(read_pair_columns(path)) == 0


@pytest.mark.parametrize(
    "line, what",
    [
        ("3\teval\t7\t4\n", "4 fields, expected 11"),
        ("3\teval\tseven\t4\t\t0\t1\t1\t0\t0,0,1,1\t0,0,1,1\n", "lines 2-2"),
        ("3\teval\t7\t4\t\t0\t1\t1\t0\t0,0,1\t0,0,1,1\n", "lines 2-2"),
        ("1" * 30 + "\teval\t7\t4\t\t0\t1\t1\t0\t0,0,1,1\t0,0,1,1\n", "lines 2-2"),
    ],
    ids=["short-line", "not-a-number", "three-sided-box", "beyond-int64"],
)
def test_a_malformed_line_is_one_format_error_naming_the_file(tmp_path, line, what):
    path = tmp_path / "bad.pairs.tsv"
    path.write_text(PAIRS_HEADER + line)
    with pytest.raises(fmt.FormatError, match=what) as info:
        read_pair_columns(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_foreign_file_is_refused_by_its_header(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("a\tb\n1\t2\n")
    with pytest.raises(fmt.FormatError, match="header differs"):
        read_pairs(path)


def _found(rng: np.random.Generator, n_train: int, n_eval: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    keys = rng.choice(n_train * n_eval, size=min(n, n_train * n_eval), replace=False)
    return keys // n_eval, keys % n_eval


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    counts=st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30), st.integers(0, 5)),
    mirrors=st.booleans(),
    features=st.booleans(),
)
def test_merge_matches_a_pair_by_pair_union(seed, counts, mirrors, features):
    """merge against a dict over every found pair: each pair once, sorted, flagged by the methods that found it,
    the smaller of direct and mirrored distance, the join's own cosine where it found the pair."""
    rng = np.random.default_rng(seed)
    n_train, n_eval = 15, 9
    th, eh, mh = (rng.integers(0, 2**64, k, dtype=np.uint64) for k in (n_train, n_eval, n_eval))
    hash_found = [(*_found(rng, n_train, n_eval, counts[0]), None)]
    if mirrors:
        hash_found.append((*_found(rng, n_train, n_eval, counts[1]), None))
    et, ee = _found(rng, n_train, n_eval, counts[2])
    embed = None
    if features:
        order = rng.permutation(et.size)  # the join's order is not the key order
        embed = (et[order], ee[order], rng.random(et.size).astype(np.float32))
    exact = tuple(np.sort(c) for c in _found(rng, n_train, n_eval, counts[3]))

    def similarity_of(ti, ei):
        return (ti * 100 + ei).astype(np.float32)

    got = merge(
        n_eval=n_eval,
        train_hash=th,
        eval_hash=eh,
        mirror_hash=mh if mirrors else None,
        hash_found=hash_found,
        embed_found=embed,
        exact=exact,
        similarity_of=similarity_of if features else None,
    )
    want: dict[tuple[int, int], dict] = {}
    for t, e, _ in hash_found:
        for key in zip(t.tolist(), e.tolist()):
            want.setdefault(key, {})["hash"] = True
    for t, e, s in zip(*embed) if embed else ():
        want.setdefault((int(t), int(e)), {})["cos"] = float(s)
    for key in zip(*(c.tolist() for c in exact)):
        want.setdefault(key, {})["exact"] = True
    keys = sorted(want)
    assert list(zip(got.train.tolist(), got.eval.tolist())) == keys
    for k, (t, e) in enumerate(keys):
        direct, flipped = int(np.bitwise_count(th[t] ^ eh[e])), int(np.bitwise_count(th[t] ^ mh[e]))
        assert got.distance[k] == (min(direct, flipped) if mirrors else direct)
        assert got.mirrored[k] == (mirrors and flipped < direct)
        assert (got.by_hash[k], got.exact[k], got.by_embed[k]) == (
            "hash" in want[(t, e)],
            "exact" in want[(t, e)],
            "cos" in want[(t, e)],
        )
        cos = want[(t, e)].get("cos", t * 100 + e if features else np.nan)
        np.testing.assert_equal(float(got.similarity[k]), float(np.float32(cos)))


PAIRS = 10**6
CHILD = """
import json, sys
import numpy as np
from tagstream.tools.dedup.pairs import Pairs, read_pair_columns, write_pairs

def status(key):
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])

n, path = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
p = Pairs(np.sort(rng.integers(0, 10**7, n)), rng.integers(0, 10**4, n), rng.integers(0, 11, n),
          rng.random(n).astype(np.float32), *(rng.random((4, n)) < 0.5))
boxes = rng.integers(0, 500, (10**4, 4))
train_boxes = lambda i: np.stack([i % 7, i % 5, 160 + i % 3, 120 + i % 2], axis=1)
base = status("VmRSS:")  # the columns and the imports: what the pairs already cost before the file
write_pairs(__import__("pathlib").Path(path), [p], ["eval"], train_boxes=train_boxes, eval_boxes=[boxes])
table = read_pair_columns(path)
same = bool((table.train == p.train).all() and (table.eval_box == boxes[p.eval]).all())
print(json.dumps({"base_kib": base, "peak_kib": status("VmHWM:"), "pairs": len(table), "same": same}))
"""


def test_a_million_pairs_cost_columns_not_objects(tmp_path):
    """Writing 10^6 pairs and reading them back as columns in a child process: its own peak RSS above what it held
    before the file (the pair columns and the imports) stays under 200 bytes a pair. The columns read back are
    ~65 bytes a pair, one chunk's Python objects some tens of MiB; a writer or reader holding a Python object per
    pair (the `.tolist()` of every column, a NamedTuple per row) costs 400+ bytes a pair."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(PAIRS), str(tmp_path / "big.pairs.tsv")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    assert got["pairs"] == PAIRS and got["same"]
    growth = (got["peak_kib"] - got["base_kib"]) * 1024
    assert growth < 200 * PAIRS, f"{growth / PAIRS:.0f} bytes a pair"
