"""`tagstream bench sampler` through the real CLI group, on tiny sizes; the synthetic index; torch's refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tagstream.tools.cli import main
from tagstream.tools.bench.sampler import (
    TORCH_MAX_CATEGORIES,
    _baseline,
    rank_packing,
    synthetic_index,
)

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # NUMBA_DISABLE_JIT=1 scalar wrap

ROWS = [
    "ours (alias, counter-based)",
    "ours incl. alias build (one-shot)",
    "numpy Generator.choice(p=)",
    "torch.multinomial",
    "torch WeightedRandomSampler",
]


def test_json_report_has_every_sampler_and_ratio():
    args = ["bench", "sampler", "--images", "3000", "--classes", "50", "--draws", "2000", "--ranks", "4", "--shards", "10", "--json"]
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
    result = CliRunner().invoke(main, ["bench", "sampler", "--images", "2000", "--classes", "20", "--draws", "1000", "--shards", "8", "--ranks", "3"])
    assert result.exit_code == 0, result.output
    for name in ROWS:
        assert name in result.output
    assert "ours is" in result.output and "rank packing: 3 ranks over 8 shards" in result.output
    helped = CliRunner().invoke(main, ["bench", "sampler", "--help"])
    assert helped.exit_code == 0 and "Example" in helped.output and "tagstream bench sampler --images" in helped.output


def test_more_ranks_than_images_still_reports():
    result = CliRunner().invoke(main, ["bench", "sampler", "--images", "40", "--classes", "5", "--draws", "10", "--ranks", "64", "--shards", "100"])
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
