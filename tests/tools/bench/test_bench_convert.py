"""`tagstream bench convert` through the real CLI group on a tiny source: every engine row, its ratio to the
one-process baseline of the same run, and bytes per image from the converted datasets."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tagstream.tools.cli import main


def test_local_rows_and_ratios(tmp_path):
    args = [
        "bench",
        "convert",
        str(tmp_path / "w"),
        "--images",
        "6",
        "--width",
        "96",
        "--height",
        "64",
        "--parts",
        "3",
        "--json",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    result = json.loads(res.output)
    names = [r["name"] for r in result["rows"]]
    assert names == [
        "one process, 1 worker",
        "  the same from tars, 1 worker",
        "full-decode ceiling, 1 process",
        "one process, 2 workers",
        "  the same from tars, 2 workers",
        "full-decode ceiling, 2 processes",
        "--part I/3 x 3 + merge, in turn",
    ]
    rows = result["rows"]
    base = rows[0]["images_per_s"]
    for row in rows:
        assert row["inputs"] == 6 and row["seconds"] > 0
        assert abs(row["ratio"] - row["images_per_s"] / base) < 1e-9
        if "ceiling" in row["name"]:
            assert row["bytes_per_image"] is None  # nothing is written
        else:  # a small JPEG plus its LMDB page overhead
            assert 500 < row["bytes_per_image"] < 100_000
    for files, tars, ceiling in (rows[0:3], rows[3:6]):
        assert abs(tars["vs_files"] - tars["images_per_s"] / files["images_per_s"]) < 1e-9
        for row in (files, tars):
            assert abs(row["of_ceiling"] - row["images_per_s"] / ceiling["images_per_s"]) < 1e-9
    assert rows[6]["merge_seconds"] > 0 and result["warm_bytes"] > 6 * 500
    timed_here = [
        r for r in result["rows"] if r["name"] in ("one process, 1 worker", "--part I/3 x 3 + merge, in turn")
    ]
    assert len(timed_here) == 2 and all(r["cpu_ms_per_image"] > 0 for r in timed_here)
    again = CliRunner().invoke(main, args[:-1])  # the source is reused, the table printed
    assert again.exit_code == 0 and "one process, 1 worker" in again.output and "ratio" in again.output


def test_unknown_engine_refused(tmp_path):
    res = CliRunner().invoke(main, ["bench", "convert", str(tmp_path), "--engine", "spark"])
    assert res.exit_code != 0 and "spark" in res.output
