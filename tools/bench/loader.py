"""`tagstream bench loader`: our DALI loader vs a torch DataLoader + Pillow baseline vs the decode-only
ceiling, in one run on the same JPEGs, cores and batch size; plus a per-stage breakdown and the
first-batch latency at 10^4 and 10^6 images. Numbers are images/s; ratios are printed, never asserted."""

from __future__ import annotations

import functools
import io
import multiprocessing as mp
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tagstream.loader.config import LoaderConfig
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.pipeline import turbo
from tagstream.loader.pipeline.source import source_decodes
from tagstream.tools.bench.loader_ceiling import run_ceiling, usable_cores
from tagstream.tools.bench.loader_data import encode_jpeg, photo_like, write_dataset, write_identity_vocab
from tagstream.tools.bench.loader_stages import stage_breakdown, targets
from tagstream.tools.convert.image import ImageOptions

VOCAB = "bench"
NUM_TAGS = 200


def _bench_record(i: int, restart_interval: int | str) -> tuple[bytes, list[int], int, int]:
    rng = np.random.default_rng(i)
    w, h = (500, 375) if i % 4 else (375, 500)  # a quarter portrait, like photo collections
    tags = sorted({int(t) % NUM_TAGS for t in rng.zipf(1.6, size=1 + i % 4)})
    jpeg = encode_jpeg(photo_like(rng, w, h), quality=90)
    if restart_interval and turbo.available():
        jpeg = turbo.add_restarts(jpeg, restart_interval)
    return jpeg, tags, w, h


def make_bench_dataset(
    root: str | Path,
    images: int,
    *,
    workers: int,
    progress: Callable[[int], None] | None = None,
    restart_interval: int | str = ImageOptions.restart_interval,
) -> Dataset:
    """A dataset of photo-like 500x375 JPEGs (q90, 50-110 KB), Zipf-tagged, with the vocabulary "bench", stored
    as `convert` stores JPEGs: with its default restart markers (restart_interval=0: PIL's bytes as they are)."""
    with mp.get_context("fork").Pool(max(workers, 1)) as pool:
        make = functools.partial(_bench_record, restart_interval=restart_interval)
        records = pool.imap(make, range(images), chunksize=8)
        ds = write_dataset(root, records, num_images=images, shard_size=1000, num_tags=NUM_TAGS, progress=progress)
    write_identity_vocab(ds, VOCAB)
    return ds


def make_tiny_dataset(root: str | Path, images: int) -> Dataset:
    """`images` copies of one 16x16 JPEG (~0.6 KB, so an LMDB value stays inside a page) written
    straight to LMDB: for first-batch latency only."""
    rng = np.random.default_rng(0)
    jpeg = encode_jpeg(photo_like(rng, 16, 16), quality=75)
    records = ((jpeg, [i % NUM_TAGS], 16, 16) for i in range(images))
    ds = write_dataset(root, records, num_images=images, shard_size=100_000, num_tags=NUM_TAGS)
    write_identity_vocab(ds, VOCAB)
    return ds


def bench_config(dataset: str, **kw: Any) -> LoaderConfig:
    """The benches' loader settings over a bench dataset (its identity vocabulary, sqrt sampling)."""
    return LoaderConfig(dataset=str(dataset), vocab=VOCAB, mode="train", sampling="sqrt", **kw)


def run_ours(config: LoaderConfig, batches: int, tick: Callable[[int], None]) -> dict:
    """Our loader: images/s over `batches` batches after the first (start-up timed separately)."""
    from tagstream.loader import build_loader

    t0 = time.perf_counter()
    loader = build_loader(config)
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    n = min(batches, len(loader) - 1)
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
        tick(1)
    dt = time.perf_counter() - t0
    loader.close()
    return {"images_per_s": n * config.batch_size / dt, "batches": n, "first_batch_s": first}


class _PillowDataset:
    """The baseline's torch Dataset: the same records, the same crop windows and flips, Pillow decode
    and torchvision's resized_crop / hflip, uint8 HWC out."""

    def __init__(self, config: LoaderConfig, plan: np.ndarray):
        from tagstream.loader.data.store import ShardStore

        self.config, self.plan = config, plan
        self.store = ShardStore(config.dataset)

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, position: int):
        import torch
        import torchvision.transforms.functional as F
        from PIL import Image

        from tagstream.loader.pipeline.augment import train_params

        index = int(self.plan[position])
        img = Image.open(io.BytesIO(self.store.read_image(index))).convert("RGB")
        (x, y, w, h), flip = train_params(
            img.width,
            img.height,
            seed=self.config.seed,
            epoch=0,
            rank=0,
            position=position,
            scale=self.config.random_area,
            ratio=self.config.random_aspect_ratio,
        )
        s = self.config.image_size
        img = F.resized_crop(img, y, x, h, w, [s, s], interpolation=F.InterpolationMode.BILINEAR)
        if flip:
            img = F.hflip(img)
        return torch.from_numpy(np.asarray(img).copy()), index


def run_baseline(config: LoaderConfig, batches: int, tick: Callable[[int], None]) -> dict:
    """torch.utils.data.DataLoader with Pillow, config.workers worker processes, targets in the main process."""
    import torch

    from tagstream.loader.data.vocab import Vocab
    from tagstream.loader.sampling.sampler import RankSampler

    ds = Dataset(config.dataset)
    vocab = Vocab(ds, config.vocab)
    sampler = RankSampler.from_config(config, ds, vocab)
    plan = sampler.plan(0, 0, (batches + 1) * config.batch_size)
    loader = torch.utils.data.DataLoader(
        _PillowDataset(config, plan),
        batch_size=config.batch_size,
        num_workers=config.workers,
        prefetch_factor=config.prefetch if config.workers else None,
        persistent_workers=False,
    )
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    n = 0
    for images, indices in it:
        targets(vocab, indices.numpy())
        n += 1
        tick(1)
    dt = time.perf_counter() - t0
    return {"images_per_s": n * config.batch_size / dt, "batches": n}


def first_batch_latency(
    root: Path, sizes: tuple[int, ...], *, batch_size: int, workers: int, threads: int
) -> list[dict]:
    """Time from build_loader() to the first batch, on tiny-image datasets of each size (made if absent),
    after one untimed warm-up on the first, so one-off imports and JIT compilation are not counted."""
    from tagstream.loader import build_loader

    made = {}
    for size in sizes:
        path = Path(root) / f"tiny-{size}"
        t0 = time.perf_counter()
        if not (path / "manifest.json").exists():
            make_tiny_dataset(path, size)
        made[size] = time.perf_counter() - t0
    warm = build_loader(
        bench_config(
            str(Path(root) / f"tiny-{sizes[0]}"), batch_size=batch_size, image_size=32, workers=workers, threads=threads
        )
    )
    next(iter(warm))
    warm.close()
    out = []
    for size in sizes:
        path = Path(root) / f"tiny-{size}"
        config = bench_config(str(path), batch_size=batch_size, image_size=32, workers=workers, threads=threads)
        t0 = time.perf_counter()
        loader = build_loader(config)
        built = time.perf_counter() - t0
        next(iter(loader))
        first = time.perf_counter() - t0
        loader.close()
        out.append({"images": size, "build_s": built, "first_batch_s": first, "dataset_made_s": made[size]})
    return out


def prepare_dataset(
    dataset: str | Path, *, make: int | None, workers: int, progress: Callable[[str, int], Callable[[int], None]]
) -> Dataset:
    """The bench dataset at `dataset` with its vocabulary, made first (`make` photo-like images) if absent."""
    dataset = Path(dataset)
    if not (dataset / "manifest.json").exists():
        if not make:
            raise ValueError(f"{dataset} is not a dataset; pass --make N to generate N photo-like images there")
        make_bench_dataset(dataset, make, workers=workers, progress=progress("making bench dataset", make))
    ds = Dataset(dataset)
    if VOCAB not in ds.vocab_names():
        write_identity_vocab(ds, VOCAB)
    _warm_page_cache(ds)
    return ds


def bench_loader(
    dataset: str | Path,
    *,
    make: int | None,
    batch_size: int,
    workers: int,
    threads: int,
    image_size: int,
    batches: int,
    startup: bool,
    startup_root: str | Path | None,
    antialias: bool = True,
    rounds: int = 3,
    progress: Callable[[str, int], Callable[[int], None]],
) -> dict:
    """Run every contender on the same dataset, `rounds` times interleaved; returns the median figures and ratios."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1")
    ds = prepare_dataset(dataset, make=make, workers=workers, progress=progress)
    dataset = ds.root
    config = bench_config(
        str(dataset),
        batch_size=batch_size,
        image_size=image_size,
        workers=workers,
        threads=threads,
        prefetch=2,
        antialias=antialias,
    )
    n = min(batches, len(ds) // batch_size - 1)
    if n < 1:
        raise ValueError(f"the dataset's {len(ds)} images give no batch of {batch_size} after warm-up; use more images")
    result: dict[str, Any] = {
        "dataset": str(dataset),
        "images": len(ds),
        "batch_size": batch_size,
        "workers": workers,
        "threads": threads,
        "image_size": image_size,
        "cores": usable_cores(),
        "antialias": antialias,
    }
    result["decoder"] = "turbo" if source_decodes(config.device, config.cpu_decoder) else "dali"
    # rounds interleave the contenders, so a noisy moment on a shared machine hits all of them; each
    # figure is the median over rounds and the ratios are of medians (each round's ratios are kept too)
    runs: dict[str, list[dict]] = {"ours_cpu": [], "ours_cpu_dali": [], "baseline": [], "ceiling": []}
    for r in range(rounds):
        tag = f" {r + 1}/{rounds}" if rounds > 1 else ""
        runs["ours_cpu"].append(run_ours(config, n, progress(f"ours (cpu, {result['decoder']} decode){tag}", n)))
        if source_decodes(
            config.device, config.cpu_decoder
        ):  # the same loader with DALI's CPU decoder and resize, for comparison
            runs["ours_cpu_dali"].append(
                run_ours(replace(config, cpu_decoder="dali"), n, progress(f"ours (cpu, dali decode){tag}", n))
            )
        runs["baseline"].append(run_baseline(config, n, progress(f"DataLoader + Pillow{tag}", n)))
        runs["ceiling"].append(
            run_ceiling(config, (n + 1) * batch_size, progress(f"decode-only ceiling{tag}", 2 * (n + 1)))
        )
    for key, rows in runs.items():
        if rows:
            result[key] = median_run(rows)
    result["rounds"] = [
        {
            "ours": o["images_per_s"],
            "baseline": b["images_per_s"],
            "ceiling": c["images_per_s"],
            "ratio_vs_baseline": o["images_per_s"] / b["images_per_s"],
            "ratio_vs_ceiling": o["images_per_s"] / c["images_per_s"],
        }
        for o, b, c in zip(runs["ours_cpu"], runs["baseline"], runs["ceiling"])
    ]
    result["stages"] = stage_breakdown(config, min(len(ds), (n + 1) * batch_size))
    ours = result["ours_cpu"]["images_per_s"]
    result["ratio_vs_baseline"] = ours / result["baseline"]["images_per_s"]
    result["ratio_vs_ceiling"] = ours / result["ceiling"]["images_per_s"]
    import torch

    if torch.cuda.is_available():
        gpu = bench_config(
            str(dataset),
            batch_size=batch_size,
            image_size=image_size,
            workers=workers,
            threads=threads,
            device="gpu",
            device_id=0,
            prefetch=2,
            antialias=antialias,
        )
        result["ours_gpu"] = run_ours(gpu, n, progress("ours (DALI, gpu)", n))
    if startup:
        root = Path(startup_root) if startup_root else dataset.parent / "startup-bench"
        result["startup"] = first_batch_latency(
            root, (10**4, 10**6), batch_size=batch_size, workers=workers, threads=threads
        )
    return result


def _warm_page_cache(ds: Dataset) -> None:
    """Read every shard file once, untimed: whichever contender ran first would otherwise pay the
    disk reads for all of them (seen: a first round at a third of the later rounds' rate)."""
    for shard in range(len(ds.shards)):
        with open(ds.shard_path(shard) / "data.mdb", "rb") as f:
            while f.read(1 << 24):
                pass


def median_run(rows: list[dict]) -> dict:
    """The run with the median images/s (the lower middle one for an even count)."""
    ordered = sorted(rows, key=lambda row: row["images_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def format_table(r: dict) -> str:
    how = {"turbo": "workers decode crop, resize, flip", "dali": "DALI ROI decode, resize, flip"}
    lines = [
        f"dataset {r['dataset']}: {r['images']} images; batch {r['batch_size']}, {r['workers']} workers, "
        f"{r['threads']} DALI threads (1 when the workers decode), {r['image_size']} px, {r['cores']} cores",
        f"{'contender (median of ' + str(len(r.get('rounds', [])) or 1) + ' interleaved rounds)':<52}{'images/s':>10}",
        f"{'ours: cpu, ' + how[r.get('decoder', 'dali')]:<52}{r['ours_cpu']['images_per_s']:>10.1f}"
        + ("" if r.get("antialias", True) else "   (bilinear resize without antialiasing; the baseline antialiases)"),
    ]
    if "ours_cpu_dali" in r:
        lines.append(f"{'ours: cpu, ' + how['dali']:<52}{r['ours_cpu_dali']['images_per_s']:>10.1f}")
    if "ours_gpu" in r:
        lines.append(f"{'ours: DALI gpu (mixed decode, normalise)':<52}{r['ours_gpu']['images_per_s']:>10.1f}")
    c = r["ceiling"]
    others = ", ".join(f"{k[: -len('_images_per_s')]} {v:.1f}" for k, v in c.items() if k.endswith("_images_per_s"))
    lines += [
        f"{'baseline: DataLoader + Pillow, same crops':<52}{r['baseline']['images_per_s']:>10.1f}",
        f"{'ceiling: decode only, full image (' + c['by'] + ')':<52}{c['images_per_s']:>10.1f}   ({others})",
        f"ours / baseline = {r['ratio_vs_baseline']:.2f}x (target >= 2.5)   ours / ceiling = {r['ratio_vs_ceiling']:.2f}x (target >= 0.6)",
        "per round: "
        + "; ".join(f"{x['ratio_vs_baseline']:.2f}x, {x['ratio_vs_ceiling']:.2f}x" for x in r.get("rounds", [])),
        f"first batch (ours, this dataset, the median round's loader; round 1 also pays imports and JIT): {r['ours_cpu']['first_batch_s']:.2f} s",
    ]
    s = r["stages"]
    lines.append(
        f"stages per image: record read {s['record_read_us']:.0f} us (1 process), decode+augment "
        f"{s['decode_augment_us']:.0f} us ({s.get('decoder', 'dali')}, {s['decode_augment_threads']} thread(s)), targets {s['targets_us']:.2f} us"
    )
    for row in r.get("startup", []):
        lines.append(
            f"start-up at {row['images']:>9,d} images: build {row['build_s']:.2f} s, first batch {row['first_batch_s']:.2f} s"
        )
    return "\n".join(lines)
