"""`tagstream bench loader --remote`: our loader on one dataset three ways, in one run of interleaved rounds:
from local disk, from s3:// with a cold cache (its shards downloaded while the loader starts), and from
s3:// with a warm cache (the verified shards of the cold run reused). The S3 server is moto's, started as
a separate process on 127.0.0.1 (so its CPU is not this process's), holding the dataset in memory: the
figures measure our protocol, verification and cache path on this machine, not a WAN link.

Also derived: the dataset's mean bytes per image and the download rate a rank needs to keep 3,000 images/s
fed from a cold cache, mean bytes per image x 3,000 (the rank draws from all its shards from the first
batches on, so it needs them at the rate it reads images).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

from tagstream.tools.bench.loader import bench_config, median_run, prepare_dataset, run_ours, usable_cores

TARGET_RATE = 3000  # images/s a rank is sized for in the report
BUCKET = "tagstream-bench"


@contextlib.contextmanager
def local_s3() -> Iterator[dict[str, str]]:
    """moto's S3 server in a child process on 127.0.0.1; yields the client environment (also set in os.environ
    for the duration, so loader workers inherit it)."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise ValueError("--remote needs moto's server: pip install 'moto[server]' (part of tagstream[test])") from exc
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto's server did not start on 127.0.0.1:{port}")
            time.sleep(0.1)
        os.environ.update(env)
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=30)


def _download_figures(cache: Path) -> dict:
    """What a cold loader fetched: from the shards' verified.json records."""
    import json

    records = [json.loads(p.read_text()) for p in cache.glob("*/shards/*.lmdb/verified.json")]
    size = sum(r["bytes"] for r in records)
    busy = sum(r["seconds"] for r in records)
    return {
        "shards": len(records),
        "bytes": size,
        "download_s_sum": round(busy, 3),
        "mb_per_s_per_stream": size / 1e6 / busy if busy else None,
    }


def _finish_downloads(url: str, cache: Path) -> None:
    from tagstream.loader.data.dataset import Dataset

    ds = Dataset(url, cache_dir=cache)
    for shard in range(len(ds.shards)):
        ds.ensure_shard(shard)


def bench_remote(
    dataset: str | Path,
    *,
    make: int | None,
    batch_size: int,
    workers: int,
    threads: int,
    image_size: int,
    batches: int,
    rounds: int,
    progress: Callable[[str, int], Callable[[int], None]],
) -> dict:
    """Local vs cold-cache s3:// vs warm-cache s3://, `rounds` times interleaved; median figures and ratios."""
    from tagstream.loader.data.push import push

    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1")
    ds = prepare_dataset(dataset, make=make, workers=workers, progress=progress)
    local = bench_config(
        str(ds.root), batch_size=batch_size, image_size=image_size, workers=workers, threads=threads, prefetch=2
    )
    n = min(batches, len(ds) // batch_size - 1)
    if n < 1:
        raise ValueError(f"the dataset's {len(ds)} images give no batch of {batch_size} after warm-up; use more images")
    data_bytes = sum(int(s["bytes"]) for s in ds.shards)
    per_image = data_bytes / len(ds)
    result: dict[str, Any] = {
        "dataset": str(ds.root),
        "images": len(ds),
        "shards": len(ds.shards),
        "bytes": data_bytes,
        "batch_size": batch_size,
        "workers": workers,
        "threads": threads,
        "image_size": image_size,
        "cores": usable_cores(),
        "mean_bytes_per_image": per_image,
        "rank_needs_mb_per_s_at_3000": per_image * TARGET_RATE / 1e6,
    }
    runs: dict[str, list[dict]] = {"local": [], "cold": [], "warm": []}
    with local_s3():
        import botocore.session

        botocore.session.get_session().create_client("s3").create_bucket(Bucket=BUCKET)
        url = f"s3://{BUCKET}/{Path(ds.root).name}"
        t0 = time.perf_counter()
        push(ds.root, url)
        result["push_s"] = time.perf_counter() - t0
        scratch = Path(tempfile.mkdtemp(prefix="tagstream-remote-bench-"))
        try:
            for r in range(rounds):
                tag = f" {r + 1}/{rounds}" if rounds > 1 else ""
                cache = scratch / f"cache{r}"
                remote = replace(local, dataset=url, cache_dir=str(cache))
                runs["local"].append(run_ours(local, n, progress(f"ours, local disk{tag}", n)))
                t0 = time.perf_counter()
                cold = run_ours(remote, n, progress(f"ours, s3 cold cache{tag}", n))
                cold["total_s"] = time.perf_counter() - t0
                _finish_downloads(url, cache)  # the cold loader's background downloads, so the warm run is warm
                cold["downloaded"] = _download_figures(cache)
                runs["cold"].append(cold)
                runs["warm"].append(run_ours(remote, n, progress(f"ours, s3 warm cache{tag}", n)))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    for key, rows in runs.items():
        result[key] = median_run(rows)
    base = result["local"]["images_per_s"]
    result["ratio_cold_vs_local"] = result["cold"]["images_per_s"] / base
    result["ratio_warm_vs_local"] = result["warm"]["images_per_s"] / base
    result["rounds"] = [{k: runs[k][i]["images_per_s"] for k in runs} for i in range(rounds)]
    return result


def format_remote(r: dict) -> str:
    lines = [
        (
            f"dataset {r['dataset']}: {r['images']} images in {r['shards']} shards, {r['bytes'] / 1e6:.1f} MB "
            f"({r['mean_bytes_per_image'] / 1e3:.1f} KB an image); batch {r['batch_size']}, {r['workers']} workers, "
            f"{r['threads']} threads, {r['image_size']} px, {r['cores']} cores"
        ),
        f"{'':24}{'images/s':>10}{'first batch s':>15}{'vs local':>10}",
    ]
    for key, label in (("local", "local disk"), ("cold", "s3://, cold cache"), ("warm", "s3://, warm cache")):
        row = r[key]
        ratio = row["images_per_s"] / r["local"]["images_per_s"]
        lines.append(f"{label:24}{row['images_per_s']:>10.1f}{row['first_batch_s']:>15.2f}{ratio:>9.2f}x")
    d = r["cold"]["downloaded"]
    rate = f"{d['mb_per_s_per_stream']:.1f} MB/s a stream" if d["mb_per_s_per_stream"] else "n/a"
    lines.append(
        f"cold run downloaded {d['shards']} shards, {d['bytes'] / 1e6:.1f} MB ({rate}); push took {r['push_s']:.1f} s"
    )
    lines.append(
        "rounds (images/s): " + "; ".join(", ".join(f"{k} {v:.0f}" for k, v in row.items()) for row in r["rounds"])
    )
    lines.append(
        f"a rank at {TARGET_RATE} images/s needs {r['rank_needs_mb_per_s_at_3000']:.0f} MB/s "
        f"({r['rank_needs_mb_per_s_at_3000'] * 8 / 1e3:.2f} Gbit/s) of download from a cold cache"
    )
    return "\n".join(lines)
