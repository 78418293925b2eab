"""`tagstream bench dedup --method embed` on tiny sizes: the calibration's threshold and distance rules, the
edits, the side-by-side table and the kNN speed rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tagstream.tools.bench.dedup_embed import run_knn_speed
from tagstream.tools.cli import main
from tagstream.tools.dedup.calibrate import Calibration
from tagstream.tools.dedup.transforms import TRANSFORMS
from tests.helpers.dedup_worlds import one_faiss_thread, tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    with one_faiss_thread():
        yield


def _calibration(cos: list[float], dist: list[int]) -> Calibration:
    near = {f: np.array([0.99, 0.95, 0.5], np.float32) for f in TRANSFORMS}
    near_d = {f: np.array([0, 6, 30]) for f in TRANSFORMS}
    return Calibration("c", 3, 10, near, near_d, np.array(cos, np.float32), np.array(dist), False)


def test_threshold_and_distance_keep_to_the_false_match_budget():
    c = _calibration([0.9, 0.8, 0.7] + [0.1] * 997, [5, 8, 12] + [32] * 997)
    assert c.allowed(1e-3) == 1 and c.allowed(1e-4) == 0
    t = c.threshold(1e-3)  # one false match allowed: just above the second highest (0.8)
    assert 0.8 < t < 0.8001 and int(np.sum(c.distinct_cosine >= t)) == 1
    assert c.threshold(1e-4) > 0.9 and int(np.sum(c.distinct_cosine >= c.threshold(1e-4))) == 0
    assert c.distance(1e-3) == 7 and c.distance(1e-4) == 4  # 1 pair within 7 (d=5); none within 4
    assert c.recall_embed("flip", t) == pytest.approx(2 / 3) and c.recall_hash("flip", 7) == pytest.approx(2 / 3)
    assert c.threshold(1.0) == pytest.approx(1e-6)  # every pair allowed: the lowest threshold dedup takes


def test_edits_change_the_image_and_keep_its_mode():
    rng = np.random.default_rng(0)
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    for name, (edit, _) in TRANSFORMS.items():
        out = edit(img, rng)
        assert out.mode == "RGB", name
        if name.startswith("crop 10-40"):
            assert 48 <= out.width <= 72 and 36 <= out.height <= 54
        else:
            assert not np.array_equal(np.asarray(out), np.asarray(img)), name
    grey = np.asarray(TRANSFORMS["grey"][0](img, rng))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_bench_embed_runs_both_methods_and_the_speed_part(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "run", vocab="v")
    plot = tmp_path / "c.png"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "dedup",
            "--method",
            "embed",
            "--checkpoint",
            str(ckpt),
            "--originals",
            "3",
            "--distractors",
            "4",
            "--device",
            "cpu",
            "--plot",
            str(plot),
            "--train",
            "3000",
            "--eval",
            "300",
            "--dim",
            "16",
            "--timed-queries",
            "1000",
            "--brute-queries",
            "200",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    cal = out["calibration"]
    assert cal["distinct_pairs"] == 3 * (4 + 3 * len(TRANSFORMS)) - 3 * len(TRANSFORMS)
    assert set(cal["levels"]["0.0001"]["recall"]) == set(TRANSFORMS)
    for row in cal["levels"].values():
        assert row["embed_false_matches"] <= row["allowed_false_matches"]
        assert row["hash_false_matches"] <= row["allowed_false_matches"]
    speed = out["speed"]
    assert speed["index"] == "exact (IndexFlatIP)" and speed["agreement_with_exact"] == 1.0
    assert speed["planted_recall"] == 1.0 and speed["extrapolated"]
    with Image.open(plot) as im:
        assert im.format == "PNG"


def test_speed_with_an_approximate_index_agrees_with_the_exact_join():
    s = run_knn_speed(n_train=10**9, n_eval=5000, dim=32, timed_queries=2000, brute_queries=500, seed=1)
    assert s["index"].startswith("IVF") and s["agreement_with_exact"] >= 0.95 and s["planted_recall"] >= 0.95


def test_without_a_checkpoint_the_demo_one_is_needed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["bench", "dedup", "--method", "embed", "--no-speed"])
    assert result.exit_code == 1 and "make demo" in result.output and "Traceback" not in result.output
