"""`tagstream bench dedup` on tiny sizes, and the quality measurement behind it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tagstream.kernels.phash import hamming
from tagstream.tools.bench.dedup import planted_hashes
from tagstream.tools.cli import main
from tagstream.tools.dedup.borders import content_box
from tagstream.tools.dedup.quality import EDITS, MIRRORED, UNCROPPED, Quality, measure

TINY = [
    "--images",
    "6",
    "--size",
    "64x48",
    "--train",
    "3000",
    "--eval",
    "300",
    "--distances",
    "0,3",
    "--brute-queries",
    "500",
]


def test_bench_prints_the_quality_table_and_the_speed_rows(tmp_path):
    plot = tmp_path / "q.png"
    result = CliRunner().invoke(main, ["bench", "dedup", *TINY, "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    for family in [*EDITS, *MIRRORED]:
        assert family in result.output
    assert "false-match rate" in result.output and "chosen D = " in result.output
    assert result.output.count("= brute on 500 queries") == 2
    with Image.open(plot) as im:
        assert im.format == "PNG"


def test_bench_json_speed_rows_agree_with_brute_force_and_find_the_planted_copies():
    result = CliRunner().invoke(main, ["bench", "dedup", *TINY, "--no-quality", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["speed"]["rows"]
    assert [r["max_distance"] for r in rows] == [0, 3]
    assert all(r["agrees_with_brute_on_subset"] for r in rows)
    assert rows[1]["pairs"] >= 1000  # every planted copy (<= 3 bits flipped) is within D=3


def test_bench_rejects_bad_lists_clearly():
    for args, message in (
        (["--size", "64by48"], "WIDTHxHEIGHT"),
        (["--distances", "1,x"], "integers"),
        (["--distances", "40"], "0..32"),
    ):
        result = CliRunner().invoke(main, ["bench", "dedup", *args])
        assert result.exit_code == 2 and message in result.output


def test_bench_help_has_an_example():
    result = CliRunner().invoke(main, ["bench", "dedup", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output


def test_planted_hashes_are_within_the_flip_budget():
    train, evals = planted_hashes(5000, 200, copies=300, max_flips=5, seed=1)
    d = hamming(train[:, None], evals[None, :]).min(axis=1)
    assert (d <= 5).sum() >= 300 and train.dtype == np.uint64


def _quality(near: dict, distinct: list[int]) -> Quality:
    return Quality(
        "t", 64, 10, (8, 8), {f: np.array(v) for f, v in near.items()}, np.array(distinct), np.array(distinct)
    )


def test_choose_distance_takes_the_smallest_d_meeting_the_target():
    mains = [f for f, (_, main) in EDITS.items() if main]
    near = {f: [0] * 19 + [6] for f in mains} | {"flip": [30] * 20}
    q = _quality(near, [20] * 10_000)
    assert q.choose_distance() == (0, True)  # 19 / 20 = 0.95 at D=0
    near[mains[0]] = [0] * 18 + [6, 6]
    assert _quality(near, [20] * 10_000).choose_distance() == (6, True)
    assert _quality(near, [5] + [20] * 9_999).choose_distance() == (6, True)  # 1 in 10^4 is within the budget
    assert _quality(near, [5, 5] + [20] * 9_998).choose_distance() == (
        4,
        False,
    )  # 2 in 10^4 is not: D < 5, recall short


def test_edits_change_the_image_as_documented():
    rng = np.random.default_rng(0)
    img = Image.new("RGB", (200, 100), (90, 120, 150))
    for name, (edit, _) in EDITS.items():
        out = edit(img, rng)
        if name.startswith("crop <="):
            assert 190 <= out.width <= 200 and 95 <= out.height <= 100
        if name.startswith("crop 5-20"):
            assert 160 <= out.width <= 190 and 80 <= out.height <= 95
        if name.startswith("resize"):
            assert 100 <= out.width <= 400 and out.width / out.height == pytest.approx(2, rel=0.05)
        if name.startswith("border"):  # img2dataset's border mode: 2:1 fitted in the square, bars above and below
            side, fill = (256, 0) if name == "border 256" else (224, 255 if "white" in name else 0)
            a = np.asarray(out, np.int16)
            bar = (side - side // 2) // 2
            assert out.size == (side, side) and np.abs(a[: bar - 2] - fill).max() <= 8
            assert np.abs(a[side // 2] - (90, 120, 150)).max() <= 8
            assert content_box(np.asarray(out)) == (0, bar, side, bar + side // 2)


def test_measure_separates_copies_from_distinct_images():
    q = measure(images=8, size=(96, 72), seed=2)
    assert q.distinct.size == 28 and set(q.near) == set(EDITS) | set(MIRRORED) | set(UNCROPPED)
    assert np.median(q.near["jpeg q50-95"]) < np.median(q.distinct)
    assert np.all(q.near["flip, --mirrors"] == 0)  # a pure flip is its original's mirror hash exactly
    assert np.median(q.near["flip"]) > 10
    for family, whole in ((f, w) for w, f in UNCROPPED.items()):  # hashed inside the bars: near their originals
        assert q.near[family].max() <= 10 < np.median(q.near[whole]), family
    assert np.all(q.distinct_mirrored <= q.distinct)
    with pytest.raises(ValueError, match="images"):
        measure(images=1)
