"""The training loop in-process over the in-memory fake loader: learning, evaluation, resume, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tagstream.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from tagstream.train.loop import main
from tagstream.train.rundir import step_losses as _losses
from tests.helpers.train_fakes import FakeLoader, fake_factory
from tests.helpers.train_fakes import fake_run_config as _config


def _records(out, kind):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_loss_falls_and_held_out_metrics_beat_chance(tmp_path):
    out = tmp_path / "run"
    summary = main(
        _config(out, "run.steps=40", "run.eval_every=20", "data.holdout_fraction=0.2"), loader_factory=fake_factory
    )
    losses = _losses(out)
    assert sorted(losses) == list(range(1, 41))
    first, last = np.mean([losses[s] for s in range(1, 9)]), np.mean([losses[s] for s in range(33, 41)])
    assert last < 0.7 * first, (first, last)
    evals = _records(out, "eval")
    assert [e["step"] for e in evals] == [20, 40] and evals[-1]["images"] == 48
    # 6 classes, 1-2 per image: a random ranking gives mAP ~0.25; colours make the task easy
    assert summary["eval"]["mAP"] > 0.6 and summary["eval"]["precision@1"] > 0.5
    assert summary["step"] == 40 and summary["images_per_s"] > 0 and 0 <= summary["data_wait"] < 1
    saved = json.loads((out / "config.json").read_text())
    state = load_checkpoint(latest_checkpoint(out))
    assert state["config"] == saved and state["step"] == 40 and state["model_name"] == "regnet_y_tiny"
    assert state["loader"]["epoch"] == 40 // (192 // 16) and state["num_classes"] == 6


def test_held_out_evaluation_reads_at_most_holdout_max_images(tmp_path):
    out = tmp_path / "run"
    cfg = _config(out, "run.steps=4", "data.holdout_fraction=0.2", "data.holdout_max_images=10")
    summary = main(cfg, loader_factory=fake_factory)
    # 48 held-out images, 10 read; the mAP sample holds them all
    assert summary["eval"]["images"] == 10 and summary["eval"]["mAP_images"] == 10
    assert 0 <= summary["eval"]["precision@1"] <= 1 and 0 <= summary["eval"]["mAP"] <= 1


def test_interrupted_run_resumes_to_the_same_losses(tmp_path):
    # a constant LR, so the shorter first leg follows the same curve as the full run
    extra = ("schedule.kind=constant", "run.checkpoint_every=5", "run.seed=3")
    main(_config(tmp_path / "full", "run.steps=14", *extra), loader_factory=fake_factory)
    main(_config(tmp_path / "leg", "run.steps=10", *extra), loader_factory=fake_factory)
    main(_config(tmp_path / "leg", "run.steps=14", *extra), resume="auto", loader_factory=fake_factory)
    full, leg = _losses(tmp_path / "full"), _losses(tmp_path / "leg")
    assert sorted(leg) == list(range(1, 15))
    assert [leg[s] for s in range(1, 15)] == [full[s] for s in range(1, 15)]
    start = _records(tmp_path / "leg", "start")
    assert [s["step"] for s in start] == [0, 10] and start[1]["resumed_from"].endswith("step-000000010.pt")
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))["model"]
    b = load_checkpoint(latest_checkpoint(tmp_path / "leg"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_accumulation_and_sigmoid_loss(tmp_path):
    out = tmp_path / "run"
    summary = main(
        _config(out, "batch.grad_accum=2", "run.epochs=1", "model.loss=sigmoid"), loader_factory=fake_factory
    )
    start = _records(out, "start")[0]
    # tiny-cpu holds out 10% of the fake loader's 240 images
    assert start["per_rank_batch"] == 8 and start["steps_per_epoch"] == 216 // 8 // 2
    assert summary["step"] == 13 and np.isfinite(summary["loss"])


def test_logged_lr_is_the_lr_each_step_used(tmp_path):
    out = tmp_path / "run"
    main(_config(out, "run.steps=3", "run.log_every=1"), loader_factory=fake_factory)
    peak = 0.4 * 16 / 256  # tiny-cpu: base_lr 0.4 per 256 images, global batch 16
    # warm-up over 2 steps from 0.1 of the peak, then cosine over the 1 step left
    assert [r["lr"] for r in _records(out, "train")] == pytest.approx([0.1 * peak, 0.55 * peak, peak])


def test_tensorboard_events_when_installed(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard is optional; the run log is metrics.jsonl without it")
    out = tmp_path / "run"
    main(_config(out, "run.steps=2", "run.log_every=1"), loader_factory=fake_factory)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_keep_last_checkpoints(tmp_path):
    out = tmp_path / "run"
    main(_config(out, "run.steps=6", "run.checkpoint_every=1", "run.keep_last=2"), loader_factory=fake_factory)
    assert [p.name for p in list_checkpoints(out)] == ["step-000000005.pt", "step-000000006.pt"]


def test_refusals(tmp_path, monkeypatch):
    out = tmp_path / "run"
    main(_config(out, "run.steps=2"), loader_factory=fake_factory)
    with pytest.raises(ValueError, match=r"holds another run \(its config.json differs in optim.base_lr\)"):
        main(_config(out, "run.steps=2", "optim.base_lr=0.2"), loader_factory=fake_factory)
    with pytest.raises(ValueError, match="already holds checkpoints of this run; pass --resume"):
        main(_config(out, "run.steps=2"), loader_factory=fake_factory)
    with pytest.raises(
        ValueError, match=r"was trained with another config \(model.name: 'regnet_y_tiny' -> 'resnet18'\)"
    ):
        main(_config(out, "run.steps=4", "model.name=resnet18"), resume="auto", loader_factory=fake_factory)
    assert json.loads((out / "config.json").read_text())["model"]["name"] == "regnet_y_tiny"  # left as it was
    with pytest.raises(ValueError, match="an epoch has 2 batches per rank, fewer than batch.grad_accum=4"):
        main(_config(tmp_path / "b", "batch.grad_accum=4", "data.samples_per_epoch=8"), loader_factory=fake_factory)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="global_size=16 is not divisible by world size 3"):
        main(_config(tmp_path / "c"), loader_factory=fake_factory)


def test_a_diverging_run_stops_with_a_clear_error_and_no_checkpoint_of_bad_weights(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(
        FloatingPointError,
        match=r"the (loss became|gradient norm became|weights are) (nan|inf|not finite) at step \d+.*; lower optim.base_lr",
    ):
        main(
            _config(out, "run.steps=12", "optim.base_lr=1000", "schedule.warmup_steps=0", "run.checkpoint_every=1"),
            loader_factory=fake_factory,
        )
    for path in list_checkpoints(out):  # every checkpoint written before the stop holds finite weights
        state = load_checkpoint(path)
        assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point()), path


def test_loaders_closed_and_torch_settings_restored(tmp_path):
    made: list[FakeLoader] = []

    def factory(config, rank=0, world=1):
        made.append(FakeLoader(config, rank, world))
        return made[-1]

    threads = torch.get_num_threads()
    main(_config(tmp_path / "run", "run.steps=1", "data.holdout_fraction=0.1", "run.threads=3"), loader_factory=factory)
    assert [m.config.mode for m in made] == ["train", "eval"] and all(m.closed for m in made)
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    made.clear()
    with pytest.raises(ValueError, match="fewer than batch.grad_accum"):  # closed on errors too
        main(_config(tmp_path / "r2", "batch.grad_accum=4", "data.samples_per_epoch=8"), loader_factory=factory)
    assert made and all(m.closed for m in made)
