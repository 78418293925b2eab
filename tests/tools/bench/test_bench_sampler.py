"""`tagstream bench sampler` through the real CLI group, on tiny sizes; the synthetic index; torch's refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tagstream.tools.bench.sampler import TORCH_MAX_CATEGORIES, _baseline, rank_packing, synthetic_index
from tagstream.tools.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # NUMBA_DISABLE_JIT=1 scalar wrap

ROWS = [
    "ours (alias, counter-based)",
    "ours incl. alias build (one-shot)",
    "numpy Generator.choice(p=)",
    "torch.multinomial",
    "torch WeightedRandomSampler",
]


def test_json_report_has_every_sampler_and_ratio():
    args = [
        "bench",
        "sampler",
        "--images",
        "3000",
        "--classes",
        "50",
        "--draws",
        "2000",
        "--ranks",
        "4",
        "--shards",
        "10",
        "--json",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert r["images"] == 3000 and r["draws"] == 2000 and list(r["rows"]) == ROWS
    for name in ROWS:
        assert r["rows"][name]["draws_per_s"] > 0
    for name in ROWS[2:]:  # each baseline carries our speed-up over it, from the same run
        row = r["rows"][name]
        assert row["ours_speedup"] == pytest.approx(r["rows"][ROWS[0]]["draws_per_s"] / row["draws_per_s"])
    assert r["rows"][ROWS[1]]["seconds"] == pytest.approx(r["rows"][ROWS[0]]["seconds"] + r["alias_seconds"])
    assert 0 < r["drawable_images"] < 3000 and r["labels"] >= r["drawable_images"]
    p = r["packing"]
    assert p["ranks"] == 4 and p["shards"] == 10 and 0 <= p["imbalance"] <= p["imbalance_whole_shards"] + 1e-12
    assert r["peak_rss_mb"] > 0 and r["weights_seconds"] >= 0 and r["alias_seconds"] >= 0


def test_table_output_and_help():
    result = CliRunner().invoke(
        main,
        ["bench", "sampler", "--images", "2000", "--classes", "20", "--draws", "1000", "--shards", "8", "--ranks", "3"],
    )
    assert result.exit_code == 0, result.output
    for name in ROWS:
        assert name in result.output
    assert "ours is" in result.output and "rank packing: 3 ranks over 8 shards" in result.output
    helped = CliRunner().invoke(main, ["bench", "sampler", "--help"])
    assert helped.exit_code == 0 and "Example" in helped.output and "tagstream bench sampler --images" in helped.output


def test_more_ranks_than_images_still_reports():
    result = CliRunner().invoke(
        main,
        ["bench", "sampler", "--images", "40", "--classes", "5", "--draws", "10", "--ranks", "64", "--shards", "100"],
    )
    assert result.exit_code == 0, result.output
    assert "rank packing: 64 ranks over 100 shards" in result.output
    empty = rank_packing(np.zeros(10), ranks=2, shards=2)  # rank 0 owns nothing drawable: reported, not raised
    assert empty["rank0_images"] == 0 and "owns no image with positive weight" in empty["rank0_error"]


def test_bad_sampling_is_a_usage_error():
    result = CliRunner().invoke(main, ["bench", "sampler", "--images", "100", "--sampling", "cubic"])
    assert result.exit_code == 2 and "'cubic' is not one of" in result.output


def test_torch_refusal_is_reported_not_raised():
    too_many = torch.ones(TORCH_MAX_CATEGORIES + 1)
    row = _baseline(lambda: torch.multinomial(too_many, 10, replacement=True), 10)
    assert set(row) == {"refused"} and row["refused"].startswith("RuntimeError")
    assert "draws_per_s" in _baseline(lambda: torch.multinomial(torch.ones(10), 10, replacement=True), 10)


def test_synthetic_index_is_zipf_tagged_sorted_and_deterministic():
    off, lab = synthetic_index(20_000, 100, seed=1)
    assert off.dtype == np.int64 and lab.dtype == np.int32 and off[0] == 0 and off[-1] == len(lab)
    k = np.diff(off)
    assert k.min() == 0 and k.max() == 3 and 0.01 < np.mean(k == 0) < 0.03
    assert lab.min() >= 0 and lab.max() < 100
    image = np.repeat(np.arange(20_000), k)
    same_image = image[1:] == image[:-1]
    assert np.all(lab[1:][same_image] > lab[:-1][same_image])  # sorted and unique within an image
    counts = np.bincount(lab, minlength=100)
    assert counts[0] > 10 * counts[99] > 0  # heavy head, long tail
    again = synthetic_index(20_000, 100, seed=1)
    assert np.array_equal(again[0], off) and np.array_equal(again[1], lab)
    assert not np.array_equal(synthetic_index(20_000, 100, seed=2)[1][:100], lab[:100])
    with pytest.raises(ValueError, match="classes=2"):
        synthetic_index(10, 2)


def test_startup_bench_measures_each_phase_in_its_own_process(tmp_path):
    """--world: rank R of W beside world 1 on one index-only dataset; every phase a child with its own peak RSS."""
    data = tmp_path / "idx"
    args = [
        "bench",
        "sampler",
        "--images",
        "40000",
        "--classes",
        "60",
        "--world",
        "4",
        "--rank",
        "1",
        "--shard-size",
        "900",
        "--data",
        str(data),
        "--json",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert list(r["phases"]) == ["bare", "precompute", "packing", "rank", "world1"] and r["shards"] == 45
    for p in r["phases"].values():
        assert (
            p["peak_rss_mb"] > 50
            and p["seconds"] >= 0
            and p["wall_seconds"] >= p["seconds_with_imports"] >= p["seconds"]
        )
    assert r["phases"]["precompute"]["cache_hits"] == {"summary": False}
    assert r["phases"]["packing"]["cache_hits"] == {"summary": True, "packing": False}
    rank, world1 = r["phases"]["rank"], r["phases"]["world1"]
    assert rank["cache_hits"] == {"summary": True, "packing": True} and world1["cache_hits"]["summary"] is True
    # a quarter of the images (within the packing's cuts), all at world 1; no class, mask, holdout remove ~4 %
    assert 0.2 < rank["owned_images"] / 40_000 < 0.3 and world1["owned_images"] == 40_000
    assert 0.94 < rank["drawable"] / 40_000 < 0.98 and rank["pool"] < world1["pool"] == rank["drawable"]
    assert r["rank_vs_world1"]["memory"] == pytest.approx(rank["peak_rss_mb"] / world1["peak_rss_mb"])
    from tagstream.tools.bench.sampler_startup import format_startup

    table = format_startup(r)
    assert (
        "rank 1 of 4 (cached)" in table
        and "precompute (world 1, cached once)" in table
        and "rank / world 1: memory" in table
    )


def test_startup_bench_skips_world_1_that_cannot_fit_and_refuses_a_dataset_that_cannot(tmp_path, monkeypatch):
    from tagstream.tools.bench import sampler_startup

    monkeypatch.setattr(sampler_startup, "available_memory", lambda: 1000)
    # phases in this process (the skip decision is the parent's; measuring is the test above's)
    monkeypatch.setattr(sampler_startup, "_child", sampler_startup.run_phase)
    r = sampler_startup.run_startup_bench(images=5000, world=2, rank=1, classes=20, shard_size=700)
    assert r["phases"]["rank"]["pool"] > 0
    assert "needs about" in r["phases"]["world1"]["skipped"] and "rank_vs_world1" not in r
    result = CliRunner().invoke(
        main, ["bench", "sampler", "--images", str(10**15), "--world", "2", "--data", str(tmp_path / "x")]
    )
    assert result.exit_code == 1 and "GiB of disk" in result.output and not (tmp_path / "x").exists()
    bad = CliRunner().invoke(main, ["bench", "sampler", "--images", "100", "--world", "2", "--rank", "2"])
    assert bad.exit_code == 2 and "rank 2 is not in [0, 2)" in bad.output


def test_index_dataset_is_the_same_whatever_the_chunk(tmp_path, monkeypatch):
    from tagstream.loader.data.vocab import Vocab
    from tagstream.tools.bench import index_data

    big = index_data.make_index_dataset(tmp_path / "a", images=3000, classes=40, shard_size=700, seed=4)
    monkeypatch.setattr(index_data, "CHUNK", 97)
    small = index_data.make_index_dataset(tmp_path / "b", images=3000, classes=40, shard_size=700, seed=4)
    va, vb = Vocab(big, "v"), Vocab(small, "v")
    assert np.array_equal(va.label_offsets, vb.label_offsets) and np.array_equal(va.labels, vb.labels)
    assert np.array_equal(big.load_mask("dedup"), small.load_mask("dedup")) and 0 < big.load_mask("dedup").sum() < 100
    assert [s["images"] for s in big.shards] == [700, 700, 700, 700, 200] and va.num_classes == 40
    k = np.diff(va.label_offsets)
    assert k.max() == 3 and 0.005 < np.mean(k == 0) < 0.05 and va.labels.max() < 40
    image = np.repeat(np.arange(3000), k)
    same = image[1:] == image[:-1]
    assert np.all(va.labels[1:][same] > va.labels[:-1][same])  # sorted, distinct within an image
    assert [c.count for c in va.classes()] == np.bincount(va.labels, minlength=40).tolist()
