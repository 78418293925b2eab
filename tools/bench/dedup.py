"""`tagstream bench dedup`: the perceptual hash's recall and false-match rate per distance (which fixes the
default D), and the join's speed on 10^7 x 10^5 hashes against the all-pairs rate measured in the same run.

The all-pairs rate is measured on a subset of the queries and extrapolated (all-pairs time is exactly
linear in the number of queries); the multi-index-hashing join is timed on the full set.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tagstream.kernels import dedup as kdedup
from tagstream.tools.dedup.hashing import DEFAULT_MAX_DISTANCE
from tagstream.tools.dedup.quality import EDITS, MIRRORED, Quality


def planted_hashes(
    n_train: int, n_eval: int, *, copies: int, max_flips: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random 64-bit hashes, with `copies` training hashes replaced by eval hashes with up to
    max_flips bits flipped (so the join has matches to find, as in real de-duplication)."""
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 2**64, n_train, dtype=np.uint64)
    evals = rng.integers(0, 2**64, n_eval, dtype=np.uint64)
    copies = min(copies, n_train)
    where = rng.choice(n_train, copies, replace=False)
    flips = np.zeros(copies, np.uint64)
    n_flips = rng.integers(0, max_flips + 1, copies)
    for k in range(max_flips):
        bit = rng.integers(0, 64, copies).astype(np.uint64)
        flips |= np.where(k < n_flips, np.uint64(1) << bit, np.uint64(0))  # repeated bits: fewer flips, still <= max
    train[where] = evals[rng.integers(0, n_eval, copies)] ^ flips
    return train, evals


def run_speed(*, n_train: int, n_eval: int, distances: list[int], brute_queries: int, seed: int) -> dict:
    train, evals = planted_hashes(n_train, n_eval, copies=1000, max_flips=max(distances), seed=seed)
    t0 = time.perf_counter()
    kdedup.mih_join(train[:1000], evals[:1000], 4, bands=4)  # compile or load the cached kernels
    kdedup.brute_counts(train[:10], evals[:10], 4)
    out = {"train": n_train, "eval": n_eval, "warmup_seconds": time.perf_counter() - t0, "rows": []}
    sub = train[: min(brute_queries, n_train)]
    for d in distances:
        method, bands = kdedup.plan_join(n_train, n_eval, d)
        t0 = time.perf_counter()
        brute = kdedup.brute_counts(sub, evals, d)
        brute_seconds = time.perf_counter() - t0
        extrapolated = brute_seconds * n_train / sub.shape[0]
        if method != "mih":  # join() would run all pairs itself: that time is the extrapolated one
            out["rows"].append(
                {
                    "max_distance": d,
                    "method": method,
                    "brute_seconds_extrapolated": extrapolated,
                    "brute_subset_queries": int(sub.shape[0]),
                }
            )
            continue
        t0 = time.perf_counter()
        q, _, _ = kdedup.mih_join(train, evals, d, bands=bands)
        seconds = time.perf_counter() - t0
        on_subset = np.bincount(q[q < sub.shape[0]], minlength=sub.shape[0])
        out["rows"].append(
            {
                "max_distance": d,
                "method": method,
                "bands": bands,
                "radii": kdedup.band_radii(d, bands).tolist(),
                "seconds": seconds,
                "pairs": int(q.size),
                "queries_per_s": n_train / seconds,
                "brute_subset_queries": int(sub.shape[0]),
                "brute_subset_seconds": brute_seconds,
                "brute_seconds_extrapolated": extrapolated,
                "brute_comparisons_per_s": sub.shape[0] * n_eval / brute_seconds,
                "speedup": extrapolated / seconds,
                "agrees_with_brute_on_subset": bool(np.array_equal(on_subset, brute)),
            }
        )
    return out


def quality_summary(q: Quality, distances: range) -> dict:
    d, met = q.choose_distance()
    return {
        "hash": q.hash_name,
        "bits": q.hash_bits,
        "images": q.images,
        "size": list(q.size),
        "distinct_pairs": int(q.distinct.size),
        "recall": {f: [q.recall(f, k) for k in distances] for f in q.near},
        "main": [f for f, (_, main) in EDITS.items() if main],
        "false_match_rate": [q.false_match_rate(k) for k in distances],
        "false_matches": [int(np.sum(q.distinct <= k)) for k in distances],
        "false_match_rate_mirrors": [q.false_match_rate(k, mirrored=True) for k in distances],
        "distances": list(distances),
        "chosen_distance": d,
        "target_met": met,
        "default_distance": DEFAULT_MAX_DISTANCE,
    }


def plot_quality(path: Path, q: Quality, distances: range) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    for f, (_, main) in EDITS.items():
        top.plot(list(distances), [q.recall(f, d) for d in distances], "-" if main else ":", marker="o", ms=3, label=f)
    for f in MIRRORED:
        top.plot(list(distances), [q.recall(f, d) for d in distances], "--", marker="x", ms=3, label=f)
    top.axhline(0.95, color="grey", lw=0.8)
    top.set_ylabel("recall (near copies found)")
    top.legend(fontsize=7, loc="lower right")
    floor = min(1e-5, 0.3 / q.distinct.size)  # where "none observed" is drawn, below any observable rate
    fmr = [q.false_match_rate(d) for d in distances]
    seen = [(d, f) for d, f in zip(distances, fmr) if f > 0]
    if seen:
        bottom.semilogy(*zip(*seen), marker="o", ms=3, color="black", label="observed")
    unseen = [d for d, f in zip(distances, fmr) if f == 0]
    bottom.semilogy(unseen, [floor] * len(unseen), "v", ms=4, color="grey", label="none observed")
    bottom.set_ylim(floor / 2, 1.0)
    bottom.axhline(1e-4, color="grey", lw=0.8)
    bottom.legend(fontsize=7, loc="upper left")
    bottom.set_ylabel(f"false-match rate ({q.distinct.size:,} distinct pairs)")
    bottom.set_xlabel(f"max Hamming distance D ({q.hash_name}, {q.hash_bits} bits)")
    d, _ = q.choose_distance()
    for ax in (top, bottom):
        ax.axvline(d, color="tab:red", lw=0.8)
    fig.suptitle(f"{q.images} photo-like images {q.size[0]}x{q.size[1]}; red line: chosen D = {d}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def format_speed(s: dict) -> str:
    lines = [
        f"join of {s['train']:,} training hashes against {s['eval']:,} evaluation hashes "
        f"(kernel warm-up {s['warmup_seconds']:.2f} s, not counted)",
        f"{'D':>3s} {'method':>22s} {'seconds':>9s} {'pairs':>7s} {'queries/s':>12s} "
        f"{'all-pairs s (extrap.)':>22s} {'speedup':>8s}  checked",
    ]
    for r in s["rows"]:
        if r["method"] != "mih":
            lines.append(
                f"{r['max_distance']:3d} {'brute force (planned)':>22s} {'-':>9s} {'-':>7s} {'-':>12s} "
                f"{r['brute_seconds_extrapolated']:22.1f} {'1.0':>7s}x  multi-index hashing would cost more"
            )
            continue
        method = f"mih, radii {','.join(map(str, r['radii']))}"
        lines.append(
            f"{r['max_distance']:3d} {method:>22s} {r['seconds']:9.2f} {r['pairs']:7d} {r['queries_per_s']:12,.0f} "
            f"{r['brute_seconds_extrapolated']:22.1f} {r['speedup']:7.1f}x  "
            f"{'= brute on' if r['agrees_with_brute_on_subset'] else 'DIFFERS from brute on'} {r['brute_subset_queries']:,} queries"
        )
    timed = [r for r in s["rows"] if r["method"] == "mih"]
    if timed:
        r = timed[0]
        lines.append(
            f"all-pairs: measured on {r['brute_subset_queries']:,} x {s['eval']:,} "
            f"({r['brute_comparisons_per_s']:,.0f} comparisons/s at D={r['max_distance']}), extrapolated to {s['train']:,} queries"
        )
    return "\n".join(lines)
