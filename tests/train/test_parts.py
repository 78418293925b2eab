"""Trainer parts on their own: LR schedule, hashtag metrics by hand, checkpoints, the model factory."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tagstream.train import checkpoint as ckpt
from tagstream.train import metrics as metrics_module
from tagstream.train.config import ScheduleConfig
from tagstream.train.metrics import (
    HashtagMetrics,
    average_precision_per_class,
    hashtag_metrics,
    mean_average_precision,
    precision_at_k,
)
from tagstream.train.models import MODELS, build_model, extract_features, feature_dim, replace_head
from tagstream.train.schedule import build_scheduler, lr_factor, warmup_steps


# -- schedule -------------------------------------------------------------------------------------
def test_warmup_then_cosine():
    f = [lr_factor(s, total_steps=14, warmup_steps=4, kind="cosine", warmup_start_factor=0.2) for s in range(15)]
    assert f[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert f[4] == pytest.approx(1.0)
    assert f[9] == pytest.approx(0.5)  # halfway through the 10 decay steps
    assert f[14] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(f[4:], f[5:]))


def test_step_decay_at_fractions_of_training():
    f = [lr_factor(s, total_steps=10, warmup_steps=0, kind="step", milestones=(0.3, 0.6), gamma=0.5) for s in range(10)]
    assert f == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25])


def _lrs(opt, sched, n):
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_scheduler_drives_the_optimizer_and_restores():
    p = torch.nn.Parameter(torch.zeros(1))
    cfg = ScheduleConfig(kind="cosine", warmup_epochs=0.5, warmup_start_factor=0.0, final_factor=0.1)
    opt = torch.optim.SGD([p], lr=2.0)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4, total_steps=10)
    first = _lrs(opt, sched, 5)
    assert first[0] == 0.0 and first[1] == pytest.approx(1.0) and first[2] == pytest.approx(2.0)
    # a resumed run restores optimizer and schedule and continues on the same LR curve
    opt2 = torch.optim.SGD([p], lr=2.0)
    sched2 = build_scheduler(opt2, cfg, steps_per_epoch=4, total_steps=10)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    rest, rest2 = _lrs(opt, sched, 5), _lrs(opt2, sched2, 5)
    assert rest == rest2
    assert rest[-1] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8))))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)  # final_factor of the peak after the last step
    assert warmup_steps(ScheduleConfig(warmup_steps=50), steps_per_epoch=4, total_steps=10) == 10


# -- metrics --------------------------------------------------------------------------------------
SCORES = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3], [0.6, 0.7, 0.1], [0.3, 0.2, 0.4]])
POS = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]], bool)


def test_precision_at_k_by_hand():
    # image 3 has no class and is left out; top-1: {0}, {1}, {1} -> hits 1, 0, 1
    assert precision_at_k(SCORES, POS, 1) == pytest.approx(2 / 3)
    # top-2: {0,2} 2 hits, {1,2} 1 hit, {1,0} 2 hits -> (1 + 1/2 + 1) / 3
    assert precision_at_k(SCORES, POS, 2) == pytest.approx(2.5 / 3)
    with pytest.raises(ValueError, match=r"k=4 must be in \[1, number of classes 3\]"):
        precision_at_k(SCORES, POS, 4)


def test_average_precision_by_hand():
    ap = average_precision_per_class(SCORES, POS)
    # class 0: ranking 0.9 (pos), 0.6 (pos) -> AP 1
    # class 1: ranking 0.8 (neg), 0.7 (pos) -> 1/2
    # class 2: ranking 0.5 (pos), 0.4 (neg), 0.3 (pos) -> (1 + 2/3) / 2
    assert ap == pytest.approx([1.0, 0.5, 5 / 6])
    assert mean_average_precision(SCORES, POS) == pytest.approx((1 + 0.5 + 5 / 6) / 3)


def test_ties_and_classes_without_positives():
    scores = np.array([[0.5, 0.5], [0.5, 0.5]])
    pos = np.array([[0, 0], [1, 0]], bool)
    # stable order on ties: image 0 ranks first for class 0 -> AP 1/2; class 1 has no positive
    ap = average_precision_per_class(scores, pos)
    assert ap[0] == pytest.approx(0.5) and math.isnan(ap[1])
    assert mean_average_precision(scores, pos) == pytest.approx(0.5)
    assert math.isnan(mean_average_precision(scores, np.zeros((2, 2), bool)))
    # a tie in top-1 goes to the lower class id
    assert precision_at_k(scores, np.array([[1, 0], [0, 1]], bool), 1) == pytest.approx(0.5)


def test_hashtag_metrics_keys():
    m = hashtag_metrics(np.random.default_rng(0).random((8, 6)), np.eye(8, 6, dtype=bool))
    assert set(m) == {"precision@1", "precision@5", "mAP", "images"} and m["images"] == 8
    assert "precision@5" not in hashtag_metrics(SCORES, POS)
    with pytest.raises(ValueError, match=r"must both be \(N, C\)"):
        hashtag_metrics(SCORES, POS[:2])


def _random_split(seed: int, n: int, c: int):
    rng = np.random.default_rng(seed)
    scores = rng.random((n, c)).astype(np.float32)
    scores[rng.random((n, c)) < 0.2] = 0.5  # ties, broken the same way by both
    return scores, rng.random((n, c)) < 0.15


def _stream(scores, positives, cuts, *, ranks=1, max_entries=metrics_module.MAP_MAX_ENTRIES):
    """HashtagMetrics over contiguous rank shares fed in batches cut at `cuts`, merged as evaluate merges them."""
    n = scores.shape[0]
    parts = []
    for r in range(ranks):
        lo, hi = r * n // ranks, (r + 1) * n // ranks
        m = HashtagMetrics(scores.shape[1], max_entries=max_entries // ranks)
        edges = sorted({lo, hi, *(c for c in cuts if lo < c < hi)})
        for a, b in zip(edges, edges[1:]):
            m.update(scores[a:b], positives[a:b])
        parts.append(m)
    total = HashtagMetrics(scores.shape[1])
    for m in parts:
        total.merge(m)
    return total.result()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 60),
    c=st.integers(1, 9),
    cuts=st.lists(st.integers(0, 60), max_size=6),
    ranks=st.integers(1, 3),
)
def test_streamed_metrics_equal_the_all_at_once_ones(seed, n, c, cuts, ranks):
    scores, positives = _random_split(seed, n, c)
    whole = hashtag_metrics(scores, positives)
    streamed = _stream(scores, positives, cuts, ranks=ranks)
    assert streamed["images"] == n and streamed["mAP_images"] == n  # all fit the sample: mAP exact too
    for key, value in whole.items():
        assert streamed[key] == pytest.approx(value, nan_ok=True, rel=1e-9, abs=1e-12), key


def test_map_sample_is_bounded_and_spread_over_the_split():
    scores, positives = _random_split(5, 1000, 10)
    out = _stream(scores, positives, range(0, 1000, 7), max_entries=1000)  # room for 100 images of 10 classes
    assert 50 < out["mAP_images"] <= 100 and out["images"] == 1000
    whole = hashtag_metrics(scores, positives)
    assert out["precision@1"] == pytest.approx(whole["precision@1"])  # precision stays exact
    # the sample: every 16th image of the 1000 (the stride doubled 4 times from 1 to fit 100)
    m = HashtagMetrics(10, max_entries=1000)
    for lo in range(0, 1000, 7):
        m.update(scores[lo : lo + 7], positives[lo : lo + 7])
    kept = np.concatenate([piece[2] for piece in m.pieces])
    assert m.stride == 16 and kept.tolist() == list(range(0, 1000, 16))
    assert out["mAP"] == pytest.approx(mean_average_precision(scores[kept], positives[kept]))


def test_streamed_metrics_memory_does_not_grow_with_the_split():
    """10^5 images x 356 classes (142 MB of float32 scores all at once) through HashtagMetrics in batches of 1,000:
    Python-tracked memory peaks at a few MB (the 2^20-entry mAP sample, its compaction, a batch), whatever N."""
    import tracemalloc

    rng = np.random.default_rng(0)
    m = HashtagMetrics(356, max_entries=1 << 20)
    tracemalloc.start()
    try:
        for _ in range(100):
            scores = rng.random((1000, 356), dtype=np.float32)
            m.update(scores, scores > 0.99)
            del scores
        result = m.result()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result["images"] == 100_000 and 1 << 19 <= result["mAP_images"] * 356 <= 1 << 20
    assert peak < 30 * 2**20, peak


def test_average_precision_in_class_blocks_equals_one_block(monkeypatch):
    scores, positives = _random_split(9, 40, 13)
    whole = average_precision_per_class(scores, positives)
    monkeypatch.setattr(metrics_module, "_AP_BLOCK_ENTRIES", 80)  # 2 classes at a time
    np.testing.assert_array_equal(average_precision_per_class(scores, positives), whole)


# -- checkpoints ----------------------------------------------------------------------------------
def _state(step: int) -> dict:
    return {
        "step": step,
        "model": {"w": torch.full((2,), float(step))},
        "model_name": "resnet18",
        "num_classes": 5,
        "optimizer": {},
        "schedule": {},
        "loader": {"epoch": 0, "step": 0},
        "config": {},
        "rng": {},
        "world": 1,
    }


def test_save_keeps_last_k_and_loads(tmp_path):
    for step in (10, 20, 30, 40):
        path = ckpt.save_checkpoint(_state(step), tmp_path, keep_last=2)
        assert path.name == f"step-{step:09d}.pt"
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000000030.pt", "step-000000040.pt"]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert state["step"] == 40 and torch.equal(state["model"]["w"], torch.full((2,), 40.0))


def test_temp_files_are_never_taken_for_checkpoints(tmp_path):
    ckpt.save_checkpoint(_state(1), tmp_path, keep_last=3)
    (tmp_path / ".step-000000002.pt.123.tmp").write_bytes(b"half")
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000000001.pt"


def test_load_refusals(tmp_path):
    bad = tmp_path / "step-000000001.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        ckpt.load_checkpoint(bad)
    torch.save({"weights": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="is not a tagstream checkpoint"):
        ckpt.load_checkpoint(bad)
    torch.save({"format": ckpt.FORMAT, "version": 99}, bad)
    with pytest.raises(ValueError, match="version 99 is not supported"):
        ckpt.load_checkpoint(bad)
    with pytest.raises(ValueError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")


def test_compatibility_and_resume_resolution(tmp_path):
    ckpt.check_compatible(_state(1), model_name="resnet18", num_classes=5)
    with pytest.raises(
        ValueError, match=r"holds model 'resnet18' with 5 classes, but this run builds 'resnet50' with 5"
    ):
        ckpt.check_compatible(_state(1), model_name="resnet50", num_classes=5)
    with pytest.raises(ValueError, match="with 5 classes, but this run builds 'resnet18' with 7 classes"):
        ckpt.check_compatible(_state(1), model_name="resnet18", num_classes=7)
    assert ckpt.resolve_resume(tmp_path, None) is None
    assert ckpt.resolve_resume(tmp_path, "auto") is None
    path = ckpt.save_checkpoint(_state(3), tmp_path, keep_last=1)
    assert ckpt.resolve_resume(tmp_path, "auto") == path
    with pytest.raises(ValueError, match=r"no such checkpoint \(in .*: \['step-000000003.pt'\]\)"):
        ckpt.resolve_resume(tmp_path, str(tmp_path / "step-9.pt"))


# -- models ---------------------------------------------------------------------------------------
def test_wsl_widths_match_the_paper_parameter_counts():
    # Mahajan et al. Table: 32x8d 88M, 32x16d 193M, 32x32d 466M, 32x48d 829M (1000 classes); built on
    # the meta device, so nothing is allocated
    expected = {
        "resnext101_32x8d": 88.8,
        "resnext101_32x16d": 194.0,
        "resnext101_32x32d": 468.5,
        "resnext101_32x48d": 828.4,
    }
    with torch.device("meta"):
        for name, millions in expected.items():
            model = build_model(name, 1000)
            assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.1)
            assert model.fc.out_features == 1000


@pytest.mark.parametrize(
    "name, device", [("resnet50", "meta"), ("vit_b_16", "meta"), ("resnext50_32x4d", "meta"), ("regnet_y_400mf", "cpu")]
)
def test_heads_sized_to_the_vocabulary(name, device):
    size = 224 if device == "meta" else 64  # RegNet's initialisation cannot run on the meta device
    with torch.device(device):
        model = build_model(name, 17, image_size=size)
        assert feature_dim(model) > 0 and model(torch.zeros(1, 3, size, size)).shape == (1, 17)
        replace_head(model, 3)
        assert model(torch.zeros(1, 3, size, size)).shape == (1, 3)


def test_tiny_model_features_and_head():
    torch.manual_seed(0)
    model = build_model("regnet_y_tiny", 6).eval()
    x = torch.randn(3, 3, 32, 32)
    feats = extract_features(model, x)
    assert feats.shape == (3, feature_dim(model))
    assert torch.allclose(model.fc(feats), model(x), atol=1e-6)
    replace_head(model, 9)
    assert model(x).shape == (3, 9)


def test_model_refusals():
    with pytest.raises(ValueError, match=r"model 'resnet51' is not one of \[.*'resnet50'"):
        build_model("resnet51", 10)
    with pytest.raises(ValueError, match="num_classes=0 must be >= 1"):
        build_model("resnet18", 0)
    with pytest.raises(ValueError, match="multiple of vit_b_16's patch size 16"):
        build_model("vit_b_16", 10, image_size=100)
    assert "regnet_y_tiny" in MODELS and "vit_l_16" in MODELS
