"""`tagstream bench sampler --world W --rank R`: one rank's sampler start-up (seconds, peak memory) beside
world 1's on the same index-only synthetic dataset (tools/bench/index_data.py), with a mask and a holdout
split in use.

Each phase runs in its own child process, and its peak memory is that process's VmHWM (/proc/self/status),
the high-water mark of its own address space since exec. Not ru_maxrss: Linux carries the forking parent's
resident set into a child's ru_maxrss (the mm it had before exec), and the parent here has just written the
dataset through memory maps (GBs resident at 10^8 images) - every phase would read as the parent. Phases:
  bare        interpreter + imports + the kernels' compiled code: the floor every phase pays
  precompute  the cached summary over all images (world independent, one O(N) chunked pass), cache empty
  packing     shards onto W partitions, from the cached summary (cut shards' weights only)
  rank        rank R of W with both cached: its own blocks' labels, weights, alias table, first batch
  world1      world 1 with the summary cached: every image's table in one process (skipped, with the
              memory it would need, when that exceeds what this machine has available)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("bare", "precompute", "packing", "rank", "world1")
HOLDOUT = 0.01  # holdout fraction of the split in use ("train": the held-out images are excluded)
TABLE_BYTES = (
    40  # per drawable image in one process's tables: pool, prob, alias (8 each) + weights and work while building
)


def _rule():
    from tagstream.loader.sampling.eligible import Eligibility
    from tagstream.tools.bench.index_data import MASK

    return Eligibility(masks=(MASK,), holdout_fraction=HOLDOUT, split="train")


def run_phase(phase: str, root: str, world: int, rank: int, sampling: str, batch: int) -> dict:
    """One phase, in this process (the child's side)."""
    t0 = time.perf_counter()
    from tagstream.loader.data.dataset import Dataset
    from tagstream.loader.data.vocab import Vocab
    from tagstream.loader.sampling.sampler import RankSampler, prepare_sampling

    ds = Dataset(root)
    vocab = Vocab(ds, "v")
    out: dict = {"phase": phase}
    t = time.perf_counter()
    if phase == "bare":
        _warm_kernels()
    elif phase in ("precompute", "packing"):
        r = prepare_sampling(
            ds, vocab, sampling=sampling, eligible=_rule(), partitions=world if phase == "packing" else None
        )
        out.update(r)
    else:
        w, r = (world, rank) if phase == "rank" else (1, 0)
        s = RankSampler(ds, vocab, sampling=sampling, eligible=_rule(), seed=0, rank=r, world=w)
        first = s.plan(0, 0, min(batch, len(s)))
        out.update(
            timings=s.timings,
            cache_hits=s.cache_hits,
            owned_images=int(sum(hi - lo for lo, hi in s.owned_ranges())),
            pool=int(sum(tb.pool.shape[0] for tb in s.tables)),
            first_batch=int(first.shape[0]),
            imbalance=s.imbalance,
            drawable=s.num_drawable,
        )
    out["seconds"] = time.perf_counter() - t
    out["seconds_with_imports"] = time.perf_counter() - t0
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def peak_rss_mb() -> float:
    """This process's peak resident set since exec (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status: the start-up bench measures memory on Linux only")


def _warm_kernels() -> None:
    """Load the compiled kernels every other phase uses (so 'bare' holds their memory too)."""
    import numpy as np

    from tagstream.kernels.alias import build_alias, draw_alias
    from tagstream.kernels.counts import class_counts
    from tagstream.kernels.rng import holdout_mask, stream_key
    from tagstream.kernels.weights import sample_weights

    off, lab = np.array([0, 1], np.int64), np.array([0], np.int32)
    counts = class_counts(off, lab, None, np.zeros(1, np.int64))
    w = sample_weights(off, lab, counts, 0.5, "sum", None, np.empty(1))
    prob, alias = np.empty(1), np.empty(1, np.int64)
    build_alias(w, prob, alias)
    draw_alias(prob, alias, stream_key(0), 0, np.empty(1, np.int64))
    holdout_mask(1, 0.5, 0, start=3)


def _child(phase: str, root: str, world: int, rank: int, sampling: str, batch: int) -> dict:
    """Run a phase in a fresh interpreter; it reports its own times and peak memory."""
    args = [
        sys.executable,
        "-m",
        "tagstream.tools.bench.sampler_startup",
        phase,
        root,
        str(world),
        str(rank),
        sampling,
        str(batch),
    ]
    t = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench phase {phase} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - t
    return result


def available_memory() -> int:
    """MemAvailable of /proc/meminfo in bytes (0 where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_startup_bench(
    *,
    images: int,
    world: int,
    rank: int,
    classes: int = 17_000,
    shard_size: int = 100_000,
    sampling: str = "sqrt",
    batch: int = 24,
    data: str | None = None,
    seed: int = 0,
) -> dict:
    """Everything the start-up bench measures, as a dict (see the module docstring)."""
    from tagstream.tools.bench.index_data import disk_bytes, make_index_dataset

    if not 0 <= rank < world:
        raise ValueError(f"rank={rank} must be in [0, world={world})")
    own = data is None
    root = Path(data) if data else Path(tempfile.mkdtemp(prefix="tagstream-bench-index-")) / "ds"
    out: dict = {
        "images": images,
        "world": world,
        "rank": rank,
        "classes": classes,
        "shard_size": shard_size,
        "sampling": sampling,
        "mask_fraction": 0.01,
        "holdout": HOLDOUT,
        "disk_bytes_expected": disk_bytes(images),
    }
    try:
        t = time.perf_counter()
        ds = make_index_dataset(root, images=images, classes=classes, shard_size=shard_size, seed=seed)
        out["dataset_seconds"] = time.perf_counter() - t
        out["shards"] = len(ds.shards)
        out["disk_bytes"] = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        shutil.rmtree(ds.vocab_dir("v") / "sampling", ignore_errors=True)  # the precompute starts cold
        phases: dict = {}
        for phase in PHASES:
            if phase == "world1":
                need = TABLE_BYTES * phases["rank"]["drawable"]
                if need > 0.8 * available_memory():
                    phases[phase] = {
                        "skipped": f"needs about {need / 2**30:.1f} GiB for its tables; "
                        f"{available_memory() / 2**30:.1f} GiB available"
                    }
                    continue
            phases[phase] = _child(phase, str(root), world, rank, sampling, batch)
        out["phases"] = phases
    finally:
        if own:
            shutil.rmtree(root.parent, ignore_errors=True)
    bare = out["phases"]["bare"]["peak_rss_mb"]
    for p in out["phases"].values():
        if "peak_rss_mb" in p:
            p["above_bare_mb"] = p["peak_rss_mb"] - bare
    r, w1 = out["phases"]["rank"], out["phases"]["world1"]
    if "peak_rss_mb" in w1:
        out["rank_vs_world1"] = {
            "memory": r["peak_rss_mb"] / w1["peak_rss_mb"],
            "seconds": r["seconds"] / w1["seconds"],
        }
    return out


def format_startup(r: dict) -> str:
    lines = [
        f"index-only synthetic dataset: {r['images']:,} images, {r['shards']:,} shards, {r['classes']:,} classes, "
        f"{r['disk_bytes'] / 2**30:.2f} GiB on disk (made/reused in {r['dataset_seconds']:.1f} s); sampling {r['sampling']}, "
        f"mask {r['mask_fraction']:.0%} + holdout {r['holdout']:.0%} excluded",
        f"{'phase':<34s} {'seconds':>9s} {'with imports':>13s} {'peak RSS MB':>12s} {'above bare':>11s}",
    ]
    names = {
        "bare": "bare (imports + kernels)",
        "precompute": "precompute (world 1, cached once)",
        "packing": f"packing onto {r['world']} partitions",
        "rank": f"rank {r['rank']} of {r['world']} (cached)",
        "world1": "world 1 (cached)",
    }
    for phase, p in r["phases"].items():
        if "skipped" in p:
            lines.append(f"{names[phase]:<34s} skipped: {p['skipped']}")
            continue
        lines.append(
            f"{names[phase]:<34s} {p['seconds']:9.2f} {p['seconds_with_imports']:13.2f} {p['peak_rss_mb']:12,.0f} {p['above_bare_mb']:11,.0f}"
        )
    rank = r["phases"]["rank"]
    lines.append(
        f"rank {r['rank']}: {rank['owned_images']:,} images in its blocks ({rank['pool']:,} drawable), "
        f"packing imbalance {rank['imbalance']:.2e}; {rank['drawable']:,} drawable in all"
    )
    if "rank_vs_world1" in r:
        v = r["rank_vs_world1"]
        lines.append(f"rank / world 1: memory {v['memory']:.3f}x, start-up {v['seconds']:.3f}x")
    return "\n".join(lines)


if (
    __name__ == "__main__"
):  # a phase in a child process: python -m tagstream.tools.bench.sampler_startup PHASE ROOT W R SAMPLING BATCH
    phase_name, root_dir, w, r, samp, b = sys.argv[1:7]
    print(json.dumps(run_phase(phase_name, root_dir, int(w), int(r), samp, int(b))))
