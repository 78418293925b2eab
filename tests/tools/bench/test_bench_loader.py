"""`tagstream bench loader`: runs every contender on a tiny photo-like dataset and reports ratios."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tagstream.tools.bench.loader import first_batch_latency
from tagstream.tools.bench.loader_data import encode_jpeg, photo_like
from tagstream.tools.cli.bench_loader import bench_loader


def test_photo_like_images_are_imagenet_sized_jpegs():
    rng = np.random.default_rng(0)
    sizes = [len(encode_jpeg(photo_like(rng), quality=90)) for _ in range(4)]
    assert all(50_000 <= s <= 110_000 for s in sizes), sizes
    img = photo_like(rng)
    assert img.shape == (375, 500, 3) and img.std() > 20  # not a flat shape


@pytest.mark.timeout(300)
def test_bench_runs_every_contender(tmp_path):
    runner = CliRunner()
    ds = tmp_path / "bench"
    args = [
        str(ds),
        "--make",
        "40",
        "--batch-size",
        "8",
        "--batches",
        "2",
        "--workers",
        "1",
        "--threads",
        "1",
        "--image-size",
        "64",
        "--rounds",
        "2",
    ]
    result = runner.invoke(bench_loader, args + ["--json"])
    assert result.exit_code == 0, (result.output, repr(result.exception))
    r = json.loads(result.output)
    for key in ("ours_cpu", "ours_cpu_dali", "baseline", "ceiling"):
        assert r[key]["images_per_s"] > 0
    assert r["decoder"] == "turbo" and len(r["rounds"]) == 2
    for key, row in (
        ("ours_cpu", "ours"),
        ("baseline", "baseline"),
        ("ceiling", "ceiling"),
    ):  # the median run is one of the rounds
        assert r[key]["images_per_s"] == min(x[row] for x in r["rounds"])
    assert set(r["ceiling"]) >= {"dali_images_per_s", "pillow_images_per_s", "libjpeg-turbo_images_per_s", "by"}
    assert r["ratio_vs_baseline"] == pytest.approx(r["ours_cpu"]["images_per_s"] / r["baseline"]["images_per_s"])
    assert r["ratio_vs_ceiling"] == pytest.approx(r["ours_cpu"]["images_per_s"] / r["ceiling"]["images_per_s"])
    assert {"record_read_us", "decode_augment_us", "targets_us"} <= set(r["stages"])
    assert r["images"] == 40
    result = runner.invoke(bench_loader, args)  # the dataset now exists: reused, table printed
    assert result.exit_code == 0, (result.output, repr(result.exception))
    assert "ours / baseline" in result.output and "decode only" in result.output


@pytest.mark.timeout(300)
def test_feed_compares_the_batch_source_with_the_per_sample_one(tmp_path):
    runner = CliRunner()
    args = [
        str(tmp_path / "bench"),
        "--make",
        "120",
        "--batch-size",
        "8",
        "--batches",
        "60",
        "--workers",
        "1",
        "--rounds",
        "2",
        "--feed",
    ]
    result = runner.invoke(bench_loader, args + ["--json"])
    assert result.exit_code == 0, (result.output, repr(result.exception))
    r = json.loads(result.output)
    batch, per_sample, replay = r["batch"], r["per_sample"], r["dali"]
    # 480 samples: enough that the worker's CPU time, counted by /proc in 10 ms ticks, is not zero
    assert batch["samples"] == per_sample["samples"] == replay["samples"] == 480 and len(r["rounds"]) == 2
    assert (
        batch["workers"] == 0
        and batch["workers_us"] == 0
        and per_sample["workers"] == 1
        and per_sample["workers_us"] > 0
    )
    assert replay["workers"] == 0 and r["source_us"] == pytest.approx(batch["main_us"] - replay["main_us"])
    # first reads: 60 records never read (the other 60 warm the process), 3 batches of 8 timed, then again
    touch = r["first_touch"]
    assert touch["samples"] == 24 and touch["first_us"] > 0 and touch["again_us"] > 0 and touch["first_faults"] >= 0
    for row in (batch, per_sample, replay):
        assert row["samples_per_s"] > 0 and row["main_us"] > 0 and row["thread_us"] > 0
        assert row["total_us"] == pytest.approx(row["main_us"] + row["workers_us"])
        assert row["per_core_samples_per_s"] == pytest.approx(1e6 / row["total_us"])
    assert r["per_core_ratio"] == pytest.approx(batch["per_core_samples_per_s"] / per_sample["per_core_samples_per_s"])
    result = runner.invoke(bench_loader, args)
    assert result.exit_code == 0 and "batch / per-sample" in result.output and "per core" in result.output
    assert "DALI's own (replay)" in result.output and "first reads (24 records" in result.output


def test_first_reads_need_enough_images(tmp_path):
    from tagstream.tools.bench.loader import bench_config, prepare_dataset
    from tagstream.tools.bench.loader_feed import first_touch

    ds = prepare_dataset(str(tmp_path / "bench"), make=30, workers=1, progress=lambda *a: lambda k: None)
    config = bench_config(str(ds.root), batch_size=8, image_size=32, workers=1, prefetch=2)
    assert first_touch(config) == {
        "skipped": "30 images are too few to measure first reads at batch 8 (--make 112 or more)"
    }


def test_bench_refuses_a_missing_dataset_without_make(tmp_path):
    result = CliRunner().invoke(bench_loader, [str(tmp_path / "nope")])
    assert result.exit_code != 0 and "--make" in result.output


def test_help_shows_an_example():
    result = CliRunner().invoke(bench_loader, ["--help"])
    assert result.exit_code == 0 and "Example" in result.output and "tagstream bench loader" in result.output


def test_first_batch_latency_on_growing_datasets(tmp_path):
    rows = first_batch_latency(tmp_path, (100, 3000), batch_size=8, workers=1, threads=1)
    assert [r["images"] for r in rows] == [100, 3000]
    assert all(r["first_batch_s"] >= r["build_s"] > 0 for r in rows)
