"""`tagstream bench loader --soak`: a short soak on tiny images reports readings per decoder and passes every exit
check (nothing left after a close, a SIGINT, or a worker's SIGKILL, which the loader names)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tagstream.tools.bench.loader import make_tiny_dataset
from tagstream.tools.bench.loader_soak import SUMMARISED
from tagstream.tools.bench.proc_stats import slope_per_1000
from tagstream.tools.cli.bench_loader import bench_loader


def test_slope_is_per_thousand_batches():
    assert slope_per_1000([100, 200, 300], [10.0, 10.5, 11.0]) == pytest.approx(5.0)
    assert slope_per_1000([100], [10.0]) == 0.0


@pytest.mark.timeout(900)
def test_a_short_soak_reports_flat_readings_and_clean_exits(tmp_path):
    make_tiny_dataset(tmp_path / "tiny", 64)
    args = [str(tmp_path / "tiny"), "--soak", "--batches", "240", "--batch-size", "4", "--workers", "2"]
    result = CliRunner().invoke(bench_loader, [*args, "--threads", "1", "--image-size", "32", "--json"])
    assert result.exit_code == 0, (result.output, repr(result.exception))
    r = json.loads(result.output[result.output.index("{") :])
    assert (r["epochs"], r["per_epoch"], r["batches"], r["every"]) == (3, 80, 240, 2)
    assert set(r["decoders"]) == {"turbo", "dali"}
    for decoder, d in r["decoders"].items():
        assert d["batches"] == 240 and d["readings"] == 121  # batch 1, then every 2nd
        assert [(s["batch"], s["epoch"]) for s in d["samples"]][::40] == [(1, 0), (80, 0), (160, 1), (240, 2)]
        for key in SUMMARISED:
            v = d[key]
            assert set(v) == {"start", "end", "max", "slope_per_1000"} and v["max"] >= max(v["start"], v["end"])
        assert d["main_rss_mb"]["start"] > 0
        # no descriptor a batch: 240 batches would add hundreds (lazily opened shards and buffers add a few)
        assert d["main_fds"]["max"] - d["main_fds"]["start"] < 20
        assert d["workers_fds"]["max"] - d["workers_fds"]["start"] < 20
        assert d["after_close"]["workers"] == 0
    assert r["decoders"]["turbo"]["workers"] == 2 and r["decoders"]["dali"]["workers"] == 0
    checks = {(c["check"], c["decoder"]): c for c in r["exits"]}
    assert set(checks) == {
        ("normal close", "turbo"),
        ("normal close", "dali"),
        ("SIGINT", "turbo"),
        ("SIGINT", "dali"),
        ("SIGKILL of a worker", "turbo"),
    }
    for c in r["exits"]:
        assert c["ok"] and c["processes_left"] == [] and c["shm_left"] == [] and c["rc"] is not None, c
    killed = checks[("SIGKILL of a worker", "turbo")]
    assert killed["named"] and killed["error"].startswith(f"WorkerDied: loader worker process {killed['worker']} ")
    assert "killed by signal 9 (SIGKILL)" in killed["error"]
    assert checks[("SIGINT", "turbo")]["rc"] != 0  # it stopped, and said so
    assert r["exits_ok"]
