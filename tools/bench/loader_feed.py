"""`tagstream bench loader --feed`: the GPU path's CPU side alone — plan, record reads, crop windows and
the hand-off of the JPEG bytes to DALI — for the batch source (loader/pipeline/batch_source.py, what the GPU path uses)
and today's per-sample parallel source (loader/pipeline/graph.py PlanSource), in one run on the same records.

Each feeds its own GPU graph up to the decoder (pipeline.train_inputs: the per-sample source's params
are split and cast by DALI's CPU operators, the batch source's arrive ready); in place of nvJPEG, which runs on
the GPU, `peek_image_shape` reads each JPEG's header (so every handed-over buffer is touched, as the
decoder's host side would). CPU is counted from the kernel's per-process accounting: the main process
(all its threads, DALI's included) plus the source's worker processes. Samples/s per core = samples /
CPU seconds. What this does not count: nvJPEG's own host work (Huffman decoding on the hybrid path,
staging copies), which belongs to decoding and is measured on a GPU machine (scripts/gpu-check.sh)."""

from __future__ import annotations

import gc
import os
import resource
import time
import warnings
from dataclasses import replace
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.config import LoaderConfig

CONTENDERS = ("batch", "per_sample", "dali")


class _Replay:
    """The batch source's first batch, handed to DALI again and again: the same graph with no record read,
    window or wrapping, so what is left is DALI's own share of the batch source's figure."""

    batched, decodes, train = True, False, True

    def __init__(self, source: Any, length: int):
        self.outputs, self.batch_size, self.length = source.outputs, source.batch_size, length
        self.fixed = source.batch(0, 0)

    def __call__(self, info: Any) -> tuple[Any, ...]:
        if info.iteration * self.batch_size >= self.length:
            raise StopIteration
        return self.fixed


def _cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a live process, from /proc (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _source(config: LoaderConfig, kind: str, plan: Any, length: int) -> Any:
    from tagstream.loader.data.store import ShardStore
    from tagstream.loader.pipeline.batch_source import BatchSource
    from tagstream.loader.pipeline.plan_source import PlanSource
    from tagstream.loader.pipeline.source import SourceSettings

    settings = SourceSettings(
        store=ShardStore(config.dataset),
        plan=plan,
        train=True,
        length=length,
        seed=config.seed,
        rank=0,
        scale=config.random_area,
        ratio=config.random_aspect_ratio,
        image_size=config.image_size,
    )
    if kind == "per_sample":
        return PlanSource(settings)
    batch = BatchSource(settings, batch_size=config.batch_size, prefetch=config.prefetch)
    return batch if kind == "batch" else _Replay(batch, length)


def feed_rate(
    config: LoaderConfig, kind: str, batches: int, tick: Callable[[int], None], *, plan: Any = None, warmup: int = 3
) -> dict:
    """One contender over `batches` timed batches (after `warmup` untimed): wall samples/s, CPU µs a sample in
    the main process, in its calling thread and in worker processes, samples/s per core. The samples are
    the sampler's (random, with replacement), or `plan`'s."""
    from nvidia.dali import fn, pipeline_def

    from tagstream.loader.data.dataset import Dataset
    from tagstream.loader.data.vocab import Vocab
    from tagstream.loader.pipeline.graph import source_node, start, stop, train_inputs
    from tagstream.loader.sampling.sampler import RankSampler

    b = config.batch_size
    length = (batches + warmup + config.prefetch + 2) * b
    if plan is None:
        ds = Dataset(config.dataset)
        plan = RankSampler.from_config(replace(config, samples_per_epoch=length), ds, Vocab(ds, config.vocab))
    source = _source(config, kind, plan, length)
    workers = config.workers if kind == "per_sample" else 0

    @pipeline_def(
        batch_size=b,
        num_threads=1,
        device_id=None,
        prefetch_queue_depth=config.prefetch,
        py_num_workers=max(workers, 1),
        py_start_method="fork",
        exec_dynamic=True,
    )
    def graph():
        outs = source_node(source, workers=workers, prefetch=config.prefetch, bytes_per_sample=1 << 17)
        # the GPU graph's CPU side: the decoder's inputs fed, the index out; the window arrays go to
        # nvJPEG's slice decoder and crop_mirror_normalize (GPU operators), so nothing on the CPU reads them
        jpegs, index, *window = train_inputs(source, outs)
        return fn.peek_image_shape(jpegs), index

    with warnings.catch_warnings():  # DALI's note that nothing on the CPU reads the window arrays: on purpose
        warnings.filterwarnings("ignore", message=".*are not used")
        pipe = start(graph(), workers=workers)
    pids = pipe._py_pool.pids() if workers else []
    for _ in range(warmup):
        pipe.run()
    gc.collect()  # the contenders run before this one, collected now rather than inside the timed batches
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
    return {
        "samples_per_s": n / wall,
        "main_us": main / n * 1e6,
        "thread_us": thread / n * 1e6,
        "workers_us": workers_cpu / n * 1e6,
        "total_us": total / n * 1e6,
        "per_core_samples_per_s": n / total,
        "workers": workers,
        "samples": n,
    }


class _Permutation:
    """A plan giving each of `order`'s images once, whatever the epoch."""

    def __init__(self, order: NDArray[np.int64]):
        self.order = order

    def plan(self, epoch: int, start: int, stop: int) -> NDArray[np.int64]:
        return self.order[start:stop]


def first_touch(config: LoaderConfig) -> dict:
    """The batch source reading records it has never read, in a fresh process (run it in one): CPU µs a
    sample in the main process then, and for the same records read again. At scale most reads are first
    reads, and the kernel maps a record's pages into the process when it is first touched (whether the page
    cache holds them is storage, not counted: the bench dataset is cached). Half the dataset, in a shuffled
    order, warms the process first (JIT, shard opening, index arrays); the other half is measured."""
    from tagstream.loader.data.dataset import Dataset

    order = np.random.default_rng(config.seed).permutation(len(Dataset(config.dataset)))
    warm, cold = order[: order.size // 2], order[order.size // 2 :]
    b, reads = config.batch_size, config.prefetch + 2  # batches read beyond the timed ones (prefetched)
    batches = cold.size // b - reads
    if warm.size < 3 * b or batches < 2:
        return {
            "skipped": f"{order.size} images are too few to measure first reads at batch {b} (--make {2 * (reads + 3) * b} or more)"
        }
    feed_rate(config, "batch", warm.size // b - reads, lambda _: None, plan=_Permutation(warm), warmup=0)
    # each measured pipeline warms up on 3 batches of read records, then reads `cold`: first, then again
    plan = _Permutation(np.concatenate([warm[: 3 * b], cold]))
    faults = [resource.getrusage(resource.RUSAGE_SELF).ru_minflt]
    first = feed_rate(config, "batch", batches, lambda _: None, plan=plan, warmup=3)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    again = feed_rate(config, "batch", batches, lambda _: None, plan=plan, warmup=3)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    return {
        "first_us": first["main_us"],
        "again_us": again["main_us"],
        "samples": first["samples"],
        "batch_size": config.batch_size,
        "first_faults": (faults[1] - faults[0]) / first["samples"],
        "again_faults": (faults[2] - faults[1]) / again["samples"],
    }


def first_touch_in_a_fresh_process(config: LoaderConfig) -> dict:
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(first_touch, config).result()


def bench_feed(
    config: LoaderConfig, *, batches: int, rounds: int, progress: Callable[[str, int], Callable[[int], None]]
) -> dict:
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
    result["per_core_ratio"] = (
        result["batch"]["per_core_samples_per_s"] / result["per_sample"]["per_core_samples_per_s"]
    )
    result["main_us_ratio"] = result["per_sample"]["main_us"] / result["batch"]["main_us"]
    result["source_us"] = result["batch"]["main_us"] - result["dali"]["main_us"]
    result["first_touch"] = first_touch_in_a_fresh_process(config)
    return result


def format_feed(r: dict) -> str:
    label = {
        "batch": "batch source (GPU path): 1 call a batch, no copy",
        "per_sample": "per-sample parallel source (before)",
        "dali": "DALI alone: one batch of the batch source replayed",
    }
    lines = [
        f"feed: the GPU path's CPU side (plan, record read, crop window, hand-off; decode stood in by a header read), "
        f"batch {r['batch_size']}, {r['cores']} cores, median of {len(r['rounds'])} interleaved rounds",
        f"{'contender':<52}{'samples/s':>11}{'per core':>10}{'main us':>9}{'thread us':>10}{'workers us':>11}",
    ]
    for kind in CONTENDERS:
        x = r[kind]
        lines.append(
            f"{label[kind] + (' (' + str(x['workers']) + ' workers)' if x['workers'] else ''):<52}"
            f"{x['samples_per_s']:>11.0f}{x['per_core_samples_per_s']:>10.0f}{x['main_us']:>9.2f}{x['thread_us']:>10.2f}"
            f"{x['workers_us']:>11.2f}"
        )
    lines += [
        f"batch / per-sample: {r['per_core_ratio']:.2f}x samples/s per core; main process {r['main_us_ratio']:.1f}x less CPU a sample",
        f"of the batch source's main-process figure, DALI's own (replay) {r['dali']['main_us']:.2f} us, the source "
        f"(plan, reads, windows, wrapping) {r['source_us']:.2f} us",
        f"goal: >= 50,000 samples/s per core and <= 10 us a sample in the main process: "
        f"{r['batch']['per_core_samples_per_s']:,.0f} and {r['batch']['main_us']:.2f} us",
        _format_first_touch(r["first_touch"]),
        "per round (samples/s per core, batch / per-sample / replay): "
        + "; ".join(f"{x['batch']:,.0f} / {x['per_sample']:,.0f} / {x['dali']:,.0f}" for x in r["rounds"]),
    ]
    return "\n".join(lines)


def _format_first_touch(t: dict) -> str:
    if "skipped" in t:
        return f"first reads: not measured: {t['skipped']}"
    return (
        f"first reads ({t['samples']:,} records the process never read; at scale most reads are): main process "
        f"{t['first_us']:.2f} us a sample ({t['first_faults']:.2f} page faults), the same records again {t['again_us']:.2f} us "
        f"({t['again_faults']:.2f}): {t['first_us'] - t['again_us']:+.2f} us for mapping the records' first pages"
    )


def bench_feed_dataset(
    dataset: str,
    *,
    make: int | None,
    batch_size: int,
    workers: int,
    image_size: int,
    batches: int,
    rounds: int,
    progress: Callable[[str, int], Callable[[int], None]],
) -> dict:
    """`bench loader --feed`: the bench dataset (made if absent), then both contenders."""
    from tagstream.tools.bench.loader import bench_config, prepare_dataset, usable_cores

    ds = prepare_dataset(dataset, make=make, workers=workers, progress=progress)
    config = bench_config(str(ds.root), batch_size=batch_size, image_size=image_size, workers=workers, prefetch=2)
    if len(ds) < batch_size:
        raise ValueError(f"the dataset's {len(ds)} images give no batch of {batch_size}; use more images")
    result = bench_feed(config, batches=batches, rounds=rounds, progress=progress)
    result.update(dataset=str(ds.root), images=len(ds), batch_size=batch_size, cores=usable_cores())
    return result
