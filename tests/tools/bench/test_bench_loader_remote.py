"""`tagstream bench loader --remote`: local disk vs s3:// (moto's server in a child process) cold and warm, one run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tagstream.tools.cli.bench_loader import bench_loader


@pytest.mark.timeout(300)
def test_remote_bench_reports_local_cold_and_warm(tmp_path):
    args = [
        str(tmp_path / "bench"),
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
        "1",
        "--remote",
    ]
    result = CliRunner().invoke(bench_loader, [*args, "--json"])
    assert result.exit_code == 0, (result.output, repr(result.exception))
    r = json.loads(result.output)
    for key in ("local", "cold", "warm"):
        assert r[key]["images_per_s"] > 0 and r[key]["first_batch_s"] > 0
    assert r["cold"]["downloaded"]["bytes"] == r["bytes"] and r["cold"]["downloaded"]["shards"] == r["shards"]
    assert r["ratio_warm_vs_local"] == pytest.approx(r["warm"]["images_per_s"] / r["local"]["images_per_s"])
    assert r["mean_bytes_per_image"] == pytest.approx(r["bytes"] / r["images"])
    assert r["rank_needs_mb_per_s_at_3000"] == pytest.approx(r["mean_bytes_per_image"] * 3000 / 1e6)
    table = CliRunner().invoke(bench_loader, args)  # the dataset exists now: reused, table printed
    assert table.exit_code == 0, (table.output, repr(table.exception))
    assert "s3://, cold cache" in table.output and "needs" in table.output
