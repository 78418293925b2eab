"""`tagstream bench convert`: conversion throughput of each engine on one synthetic photo-like source, against
the one-process converter (1 worker) measured in the same run, with ratios.

Rows: the one-process converter with 1 and 2 decoding workers, each beside the same images converted from
WebDataset tars and the full-decode ceiling of as many processes (tools/bench/convert_inputs.py; every input
file is read once before timing, so no row pays the disk for the others); the same inputs as N parts converted one after
the other in this process then merged (`--part I/N` + `merge`: the merge's own cost, measured apart); with
`--engine ray`, a local Ray cluster of 1 and then 2 CPUs (one task per part, merged by Ray tasks). A Ray
cluster's start and its workers' first import are timed and reported apart, not in the rate (a job pays them
once). Every row converts into a fresh directory and reports the dataset's bytes per image.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from tagstream.tools.bench.convert_inputs import TAR_SAMPLES, TARS, input_rows, warm, write_source_tars
from tagstream.tools.convert.engine import convert
from tagstream.tools.convert.image import ImageOptions
from tagstream.tools.convert.merge import merge
from tagstream.tools.convert.parts import PartSpec, convert_part

ENGINES = ("local", "ray")
SOURCE_NAME = "hashtags.jsonl"


def make_source(root: Path, *, images: int, width: int, height: int, seed: int = 0) -> Path:
    """`images` photo-like JPEGs (quality 90) with 2-5 Zipf-drawn tags each, listed in root/hashtags.jsonl;
    reused when root already holds the same source."""
    from tagstream.tools.bench.loader_data import encode_jpeg
    from tagstream.tools.synth.draw import photo_like

    spec = {"images": images, "width": width, "height": height, "seed": seed, "tar_samples": TAR_SAMPLES}
    marker = root / "source.json"
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return root / SOURCE_NAME
    shutil.rmtree(root, ignore_errors=True)
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(images):
        (root / "images" / f"{i:07d}.jpg").write_bytes(encode_jpeg(photo_like(rng, width, height), quality=90))
        tags = sorted({f"#tag{int(t)}" for t in rng.zipf(1.3, int(rng.integers(2, 6))) if t < 50_000})
        lines.append(json.dumps({"image": f"images/{i:07d}.jpg", "tags": tags, "id": f"b{i}"}))
    (root / SOURCE_NAME).write_text("\n".join(lines) + "\n")
    write_source_tars(root, lines)
    marker.write_text(json.dumps(spec))
    return root / SOURCE_NAME


def _row(name: str, cpus: int, images: int, seconds: float, out: Path, **extra) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "name": name,
        "cpus": cpus,
        "inputs": images,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "bytes_per_image": manifest["bytes"] / max(manifest["images"], 1),
        **extra,
    }


def run_convert_bench(
    workdir: str | Path,
    *,
    images: int = 600,
    width: int = 640,
    height: int = 480,
    engine: str = "local",
    parts: int = 8,
    max_side: int = ImageOptions.max_side,
    shard_size: int = 100,
) -> dict:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; allowed: {', '.join(ENGINES)}")
    workdir = Path(workdir)
    src = make_source(workdir / "source", images=images, width=width, height=height)
    warm_bytes = warm(src.parent)
    options = dict(shard_size=shard_size, image_options=ImageOptions(max_side=max_side))
    rows = []

    def fresh(name: str) -> Path:
        out = workdir / "runs" / name
        shutil.rmtree(out, ignore_errors=True)
        return out

    for workers in (1, 2):
        out = fresh(f"local{workers}")
        cpu = _cpu_seconds()
        s = convert(src, out, workers=workers, **options)
        # CPU time only with 1 worker: decoding workers are the forkserver's children, not this process's
        cpu_ms = {"cpu_ms_per_image": 1e3 * (_cpu_seconds() - cpu) / images} if workers == 1 else {}
        rows.append(
            _row(f"one process, {workers} worker{'s' * (workers > 1)}", workers, images, s.seconds, out, **cpu_ms)
        )
        out = fresh(f"tars{workers}")
        t = convert(src.parent / TARS, out, format="tar", workers=workers, **options)
        tars = _row(f"  the same from tars, {workers} worker{'s' * (workers > 1)}", workers, images, t.seconds, out)
        rows += input_rows(src, rows[-1], tars, workers, images)
    out = fresh("parts")
    cpu, t0 = _cpu_seconds(), time.perf_counter()
    for i in range(parts):
        convert_part(src, out, PartSpec(i, parts), **options)
    cpu_merge, t1 = _cpu_seconds(), time.perf_counter()
    merge(out)
    t2 = time.perf_counter()
    rows.append(
        _row(
            f"--part I/{parts} x {parts} + merge, in turn",
            1,
            images,
            t2 - t0,
            out,
            cpu_ms_per_image=1e3 * (_cpu_seconds() - cpu) / images,
            merge_seconds=t2 - t1,
            merge_images_per_s=images / (t2 - t1),
            merge_cpu_ms_per_image=1e3 * (_cpu_seconds() - cpu_merge) / images,
        )
    )
    if engine == "ray":
        rows += _ray_rows(src, fresh, images, parts, options)
    base = rows[0]["images_per_s"]
    for row in rows:
        row["ratio"] = row["images_per_s"] / base
    return {
        "images": images,
        "width": width,
        "height": height,
        "max_side": max_side,
        "parts": parts,
        "warm_bytes": warm_bytes,
        "source_bytes_per_image": sum(p.stat().st_size for p in (src.parent / "images").iterdir()) / images,
        "rows": rows,
    }


def _ray_rows(src: Path, fresh, images: int, parts: int, options: dict) -> list[dict]:
    from tagstream.tools.convert.ray_engine import convert_on_ray, require_ray

    ray = require_ray()
    if ray.is_initialized():
        raise RuntimeError("bench convert starts its own local Ray clusters; call it outside a Ray driver")
    rows = []
    for cpus in (1, 2):
        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        try:
            t1 = time.perf_counter()
            warm = ray.remote(num_cpus=1)(_warm_worker)
            ray.get([warm.remote() for _ in range(cpus)])  # the workers' first import, paid once per job
            t2 = time.perf_counter()
            out = fresh(f"ray{cpus}")
            s = convert_on_ray(src, out, parts=parts, **options)
            rows.append(
                _row(
                    f"Ray, {cpus} CPU{'s' * (cpus > 1)}, {parts} parts",
                    cpus,
                    images,
                    s.seconds,
                    out,
                    cluster_start_s=t1 - t0,
                    worker_warmup_s=t2 - t1,
                )
            )
        finally:
            ray.shutdown()
    return rows


def _cpu_seconds() -> float:
    """CPU time of this process: the per-core cost a cluster plan scales from, which a busy machine disturbs
    less than the wall-clock rate."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _warm_worker() -> None:
    import tagstream.tools.convert.parts  # noqa: F401  (PIL, numpy, lmdb: what a part task imports)


def format_table(result: dict) -> str:
    lines = [
        f"{result['images']} photo-like inputs of {result['width']}x{result['height']} "
        f"({result['source_bytes_per_image'] / 1024:.1f} KiB each), --max-side {result['max_side']}, "
        f"{result['parts']} parts; ratio = images/s over the one-process 1-worker row of this run",
        f"{'engine':<40} {'CPUs':>4} {'images/s':>9} {'ratio':>6} {'KiB/image':>9}  notes",
    ]
    for r in result["rows"]:
        notes = []
        if "cpu_ms_per_image" in r:
            notes.append(f"{r['cpu_ms_per_image']:.1f} CPU ms/image")
        if "merge_seconds" in r:
            notes.append(
                f"merge {r['merge_seconds']:.2f} s ({r['merge_images_per_s']:.0f} images/s, "
                f"{r['merge_cpu_ms_per_image']:.2f} CPU ms/image)"
            )
        if "vs_files" in r:
            notes.append(f"x{r['vs_files']:.2f} the files row of as many workers")
        if "of_ceiling" in r:
            notes.append(f"{r['of_ceiling']:.2f} of the full-decode ceiling")
        if "cluster_start_s" in r:
            notes.append(
                f"not counted: cluster start {r['cluster_start_s']:.1f} s, worker warm-up {r['worker_warmup_s']:.1f} s"
            )
        kib = "-" if r["bytes_per_image"] is None else f"{r['bytes_per_image'] / 1024:.1f}"
        lines.append(
            f"{r['name']:<40} {r['cpus']:>4} {r['images_per_s']:>9.1f} {r['ratio']:>6.2f} {kib:>9}  {'; '.join(notes)}"
        )
    return "\n".join(lines)
