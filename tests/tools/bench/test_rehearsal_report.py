"""The rehearsal's recall of planted copies, read from a pairs file's columns, against the same tally over
read_pairs' rows (the one-object-per-pair way it was counted before)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tagstream.tools.bench.rehearsal_report import recall_of
from tagstream.tools.dedup.pairs import Pairs, read_pair_columns, read_pairs, write_pairs

EDITS = ("crop", "reencode", "border")


def _rows_tally(path, edits, planted) -> dict:
    rows = {(r.train, r.eval): r for r in read_pairs(path)}
    by_edit: dict[str, dict[str, int]] = {}
    for edit, key in zip(edits, planted):
        row = rows.get(key)
        tally = by_edit.setdefault(edit, {"planted": 0, "found": 0, "hash": 0, "embed": 0})
        tally["planted"] += 1
        tally["found"] += row is not None
        tally["hash"] += bool(row and row.by_hash)
        tally["embed"] += bool(row and row.by_embed)
    found = sum(t["found"] for t in by_edit.values())
    return {"found": found, "by_edit": by_edit, "pairs": len(rows)}


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(0, 30), min_size=1, max_size=2))
def test_recall_from_columns_matches_the_rows(tmp_path_factory, seed, sizes):
    rng = np.random.default_rng(seed)
    results = []
    for n in sizes:  # a second evaluation set may repeat (train, eval) keys of the first: counted once, last row
        keys = np.sort(rng.choice(20 * 12, size=n, replace=False))
        flags = rng.random((4, n)) < 0.5
        results.append(Pairs(keys // 12, keys % 12, rng.integers(0, 11, n), rng.random(n).astype(np.float32), *flags))
    path = tmp_path_factory.mktemp("recall") / "m.pairs.tsv"
    boxes = [np.zeros((12, 4), np.int64)] * len(sizes)
    write_pairs(
        path, results, [f"e{k}" for k in range(len(sizes))], train_boxes=lambda i: boxes[0][i % 12], eval_boxes=boxes
    )
    # planted pairs: some among the pairs, some not, some missing from a dataset (-1) or beyond its eval indices
    planted = [(int(rng.integers(-1, 22)), int(rng.integers(-1, 14))) for _ in range(25)]
    planted += [(int(p.train[k]), int(p.eval[k])) for p in results for k in range(0, len(p), 3)]
    edits = [EDITS[k % 3] for k in range(len(planted))]

    got = recall_of(read_pair_columns(path), edits, planted)
    want = _rows_tally(path, edits, planted)
    assert got["found"] == want["found"] and got["pairs"] == want["pairs"]
    assert {k: {m: v[m] for m in ("planted", "found", "hash", "embed")} for k, v in got["by_edit"].items()} == want[
        "by_edit"
    ]
    assert got["recall"] == want["found"] / len(planted) and got["pairs_not_planted"] == want["pairs"] - want["found"]
