"""`tagstream bench dedup`: the perceptual hash's recall and false-match rate per distance (which fixes the
default D), and the join's speed on 10^7 x 10^5 hashes against the all-pairs rate measured in the same run.

The all-pairs rate is measured on a subset of the queries and extrapolated (all-pairs time is exactly
linear in the number of queries); the multi-index-hashing join is timed on the full set.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from ..kernels import dedup as kdedup
from .dedup import DEFAULT_MAX_DISTANCE
from .dedup_quality import EDITS, MIRRORED, Quality, measure, table


def planted_hashes(n_train: int, n_eval: int, *, copies: int, max_flips: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
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
            out["rows"].append({"max_distance": d, "method": method, "brute_seconds_extrapolated": extrapolated,
                                "brute_subset_queries": int(sub.shape[0])})
            continue
        t0 = time.perf_counter()
        q, _, _ = kdedup.mih_join(train, evals, d, bands=bands)
        seconds = time.perf_counter() - t0
        on_subset = np.bincount(q[q < sub.shape[0]], minlength=sub.shape[0])
        out["rows"].append({
            "max_distance": d, "method": method, "bands": bands, "radii": kdedup.band_radii(d, bands).tolist(),
            "seconds": seconds, "pairs": int(q.size), "queries_per_s": n_train / seconds,
            "brute_subset_queries": int(sub.shape[0]), "brute_subset_seconds": brute_seconds,
            "brute_seconds_extrapolated": extrapolated, "brute_comparisons_per_s": sub.shape[0] * n_eval / brute_seconds,
            "speedup": extrapolated / seconds, "agrees_with_brute_on_subset": bool(np.array_equal(on_subset, brute)),
        })
    return out


def quality_summary(q: Quality, distances: range) -> dict:
    d, met = q.choose_distance()
    return {
        "hash": q.hash_name, "bits": q.hash_bits, "images": q.images, "size": list(q.size), "distinct_pairs": int(q.distinct.size),
        "recall": {f: [q.recall(f, k) for k in distances] for f in q.near},
        "main": [f for f, (_, main) in EDITS.items() if main],
        "false_match_rate": [q.false_match_rate(k) for k in distances],
        "false_matches": [int(np.sum(q.distinct <= k)) for k in distances],
        "false_match_rate_mirrors": [q.false_match_rate(k, mirrored=True) for k in distances], "distances": list(distances),
        "chosen_distance": d, "target_met": met, "default_distance": DEFAULT_MAX_DISTANCE,
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
            lines.append(f"{r['max_distance']:3d} {'brute force (planned)':>22s} {'-':>9s} {'-':>7s} {'-':>12s} "
                         f"{r['brute_seconds_extrapolated']:22.1f} {'1.0':>7s}x  multi-index hashing would cost more")
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


def _size(value: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 500x375") from None
    if w < 8 or h < 8:
        raise click.BadParameter(f"{value!r}: width and height must be >= 8")
    return w, h


def _distances(value: str) -> list[int]:
    try:
        ds = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if not ds or any(not 0 <= d <= kdedup.MAX_DISTANCE for d in ds):
        raise click.BadParameter(f"{value!r}: distances must be in 0..{kdedup.MAX_DISTANCE}")
    return ds


@click.command("dedup")
@click.option("--images", default=1000, show_default=True, type=click.IntRange(min=2), help="Distinct photo-like originals (quality).")
@click.option("--size", default="500x375", show_default=True, help="Their size, WIDTHxHEIGHT.")
@click.option("--max-d", default=16, show_default=True, type=click.IntRange(0, 64), help="Largest distance in the quality table.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the recall / false-match plot to this PNG.")
@click.option("--train", "n_train", default=10_000_000, show_default=True, type=click.IntRange(min=1), help="Training hashes (speed).")
@click.option("--eval", "n_eval", default=100_000, show_default=True, type=click.IntRange(min=1), help="Evaluation hashes (speed).")
@click.option("--distances", default=f"0,4,8,{DEFAULT_MAX_DISTANCE}", show_default=True, help="Distances timed (speed).")
@click.option("--brute-queries", default=20_000, show_default=True, type=click.IntRange(min=1), help="Queries the all-pairs rate is measured on.")
@click.option("--quality/--no-quality", default=True, show_default=True, help="Run the quality part.")
@click.option("--speed/--no-speed", default=True, show_default=True, help="Run the speed part.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_dedup(images, size, max_d, plot, n_train, n_eval, distances, brute_queries, quality, speed, seed, as_json):
    """Measure de-duplication: recall of near copies (resize, JPEG, brightness, small crops; larger crops
    and flips reported apart) and false-match rate among distinct images at each distance D, the D
    chosen from them; then the join's time on --train x --eval hashes with the all-pairs rate for comparison.

    \b
    Example:
      tagstream bench dedup --plot dedup-quality.png
      tagstream bench dedup --no-quality --train 10000000 --eval 100000 --distances 0,8,10
    """
    size_wh = _size(size)
    ds = _distances(distances)
    result: dict = {}
    if quality:
        q = measure(images=images, size=size_wh, seed=seed)
        rng = range(0, min(max_d, q.hash_bits) + 1)
        result["quality"] = quality_summary(q, rng)
        if plot:
            plot_quality(Path(plot), q, rng)
            result["quality"]["plot"] = str(plot)
        if not as_json:
            d, met = q.choose_distance()
            click.echo(table(q, rng))
            click.echo(f"chosen D = {d}: target (recall >= 0.95 on every main edit, false-match rate <= 1e-4) "
                       f"{'met' if met else 'NOT met'}; tagstream dedup's default is {DEFAULT_MAX_DISTANCE}")
            if q.distinct.size < 30_000:
                click.echo(f"note: {q.distinct.size:,} distinct pairs cannot show a rate of 1e-4 (>= 30,000 needed "
                           "for zero observed to bound it at 95%): use --images 250 or more")
            click.echo("")
    if speed:
        result["speed"] = run_speed(n_train=n_train, n_eval=n_eval, distances=ds, brute_queries=brute_queries, seed=seed)
        if not as_json:
            click.echo(format_speed(result["speed"]))
    if as_json:
        click.echo(json.dumps(result, indent=2))
