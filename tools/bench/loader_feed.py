"""`tagstream bench loader --feed`: the GPU path's CPU side alone — plan, record reads, crop windows and
the hand-off of the JPEG bytes to DALI — for the batch source (loader/feed.py, what the GPU path uses)
and today's per-sample parallel source (loader/pipeline.py PlanSource), in one run on the same records.

Each feeds its own GPU graph up to the decoder (pipeline.train_inputs: the per-sample source's params
are split and cast by DALI's CPU operators, the batch source's arrive ready); in place of nvJPEG, which runs on
the GPU, `peek_image_shape` reads each JPEG's header (so every handed-over buffer is touched, as the
decoder's host side would). CPU is counted from the kernel's per-process accounting: the main process
(all its threads, DALI's included) plus the source's worker processes. Samples/s per core = samples /
CPU seconds. What this does not count: nvJPEG's own host work (Huffman decoding on the hybrid path,
staging copies), which belongs to decoding and is measured on a GPU machine (scripts/gpu-check.sh)."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any, Callable

from tagstream.loader.config import LoaderConfig

CONTENDERS = ("batch", "per_sample")


def _cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a live process, from /proc (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _source(config: LoaderConfig, kind: str, plan: Any, length: int) -> Any:
    from tagstream.loader.feed import BatchSource
    from tagstream.loader.pipeline import PlanSource
    from tagstream.loader.store import ShardStore

    common = dict(store=ShardStore(config.dataset), plan=plan, train=True, length=length, seed=config.seed, rank=0,
                  scale=config.random_area, ratio=config.random_aspect_ratio, image_size=config.image_size)
    if kind == "batch":
        return BatchSource(**common, batch_size=config.batch_size, prefetch=config.prefetch)
    return PlanSource(**common)


def feed_rate(config: LoaderConfig, kind: str, batches: int, tick: Callable[[int], None]) -> dict:
    """One contender over `batches` timed batches (after 3 untimed): wall samples/s, CPU µs a sample in
    the main process, in its calling thread and in worker processes, samples/s per core."""
    from nvidia.dali import fn, pipeline_def
    from tagstream.loader.dataset import Dataset
    from tagstream.loader.pipeline import source_node, start, stop, train_inputs
    from tagstream.loader.sampling import RankSampler
    from tagstream.loader.vocab import Vocab

    b = config.batch_size
    length = (batches + 3 + config.prefetch + 2) * b
    ds = Dataset(config.dataset)
    sampler = RankSampler.from_config(replace(config, samples_per_epoch=length), ds, Vocab(ds, config.vocab))
    source = _source(config, kind, sampler, length)
    workers = 0 if kind == "batch" else config.workers

    @pipeline_def(batch_size=b, num_threads=1, device_id=None, prefetch_queue_depth=config.prefetch,
                  py_num_workers=max(workers, 1), py_start_method="fork", exec_dynamic=True)
    def graph():
        outs = source_node(source, workers=workers, prefetch=config.prefetch, bytes_per_sample=1 << 17)
        jpegs, *window = train_inputs(source, outs)  # what the GPU graph gives the decoder
        return (fn.peek_image_shape(jpegs), *window)

    pipe = start(graph(), workers=workers)
    pids = pipe._py_pool.pids() if workers else []
    for _ in range(3):
        pipe.run()
    before = time.process_time(), time.thread_time(), [_cpu_seconds(p) for p in pids]
    t0 = time.perf_counter()
    for _ in range(batches):
        pipe.run()
        tick(1)
    wall = time.perf_counter() - t0
    after = time.process_time(), time.thread_time(), [_cpu_seconds(p) for p in pids]
    stop(pipe)
    n = batches * b
    main = after[0] - before[0]
    thread = after[1] - before[1]
    workers_cpu = sum(a - s for a, s in zip(after[2], before[2]))
    total = main + workers_cpu
    return {"samples_per_s": n / wall, "main_us": main / n * 1e6, "thread_us": thread / n * 1e6,
            "workers_us": workers_cpu / n * 1e6, "total_us": total / n * 1e6, "per_core_samples_per_s": n / total,
            "workers": workers, "samples": n}


def bench_feed(config: LoaderConfig, *, batches: int, rounds: int, progress: Callable[[str, int], Callable[[int], None]]) -> dict:
    """Both contenders, `rounds` interleaved rounds; the median round of each (by samples/s per core) and ratios."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1")
    runs: dict[str, list[dict]] = {k: [] for k in CONTENDERS}
    for r in range(rounds):
        tag = f" {r + 1}/{rounds}" if rounds > 1 else ""
        for kind in CONTENDERS:
            runs[kind].append(feed_rate(config, kind, batches, progress(f"feed: {kind}{tag}", batches)))
    result: dict[str, Any] = {}
    for kind, rows in runs.items():
        ordered = sorted(rows, key=lambda row: row["per_core_samples_per_s"])
        result[kind] = ordered[(len(ordered) - 1) // 2]
    result["rounds"] = [{k: runs[k][r]["per_core_samples_per_s"] for k in CONTENDERS} for r in range(rounds)]
    result["per_core_ratio"] = result["batch"]["per_core_samples_per_s"] / result["per_sample"]["per_core_samples_per_s"]
    result["main_us_ratio"] = result["per_sample"]["main_us"] / result["batch"]["main_us"]
    return result


def format_feed(r: dict) -> str:
    label = {"batch": "batch source (GPU path): 1 call a batch, no copy", "per_sample": "per-sample parallel source (before)"}
    lines = [
        f"feed: the GPU path's CPU side (plan, record read, crop window, hand-off; decode stood in by a header read), "
        f"batch {r['batch_size']}, {r['cores']} cores, median of {len(r['rounds'])} interleaved rounds",
        f"{'contender':<52}{'samples/s':>11}{'per core':>10}{'main us':>9}{'thread us':>10}{'workers us':>11}",
    ]
    for kind in CONTENDERS:
        x = r[kind]
        lines.append(f"{label[kind] + (' (' + str(x['workers']) + ' workers)' if x['workers'] else ''):<52}"
                     f"{x['samples_per_s']:>11.0f}{x['per_core_samples_per_s']:>10.0f}{x['main_us']:>9.2f}{x['thread_us']:>10.2f}"
                     f"{x['workers_us']:>11.2f}")
    lines += [
        f"batch / per-sample: {r['per_core_ratio']:.2f}x samples/s per core; main process {r['main_us_ratio']:.1f}x less CPU a sample",
        f"goal: >= 50,000 samples/s per core and <= 10 us a sample in the main process: "
        f"{r['batch']['per_core_samples_per_s']:,.0f} and {r['batch']['main_us']:.2f} us",
        "per round (samples/s per core, batch / per-sample): "
        + "; ".join(f"{x['batch']:,.0f} / {x['per_sample']:,.0f}" for x in r["rounds"]),
    ]
    return "\n".join(lines)



def bench_feed_dataset(dataset: str, *, make: int | None, batch_size: int, workers: int, image_size: int, batches: int,
                       rounds: int, progress: Callable[[str, int], Callable[[int], None]]) -> dict:
    """`bench loader --feed`: the bench dataset (made if absent), then both contenders."""
    from tagstream.tools.bench.loader import bench_config, prepare_dataset, usable_cores

    ds = prepare_dataset(dataset, make=make, workers=workers, progress=progress)
    config = bench_config(str(ds.root), batch_size=batch_size, image_size=image_size, workers=workers, prefetch=2)
    if len(ds) < batch_size:
        raise ValueError(f"the dataset's {len(ds)} images give no batch of {batch_size}; use more images")
    result = bench_feed(config, batches=batches, rounds=rounds, progress=progress)
    result.update(dataset=str(ds.root), images=len(ds), batch_size=batch_size, cores=usable_cores())
    return result
