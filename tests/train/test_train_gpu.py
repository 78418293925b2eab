"""The trainer on a CUDA GPU (skipped without one): bf16 autocast, channels-last, evaluation and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tagstream.train.checkpoint import latest_checkpoint, load_checkpoint
from tagstream.train.config import load_config
from tagstream.train.loop import main
from tagstream.train.rundir import step_losses as _losses
from tests.helpers.train_fakes import fake_factory

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _config(out, *extra: str):
    return load_config(
        "tiny-cpu",
        [
            "data.dataset=fake",
            "data.vocab=fake",
            f"run.out_dir={out}",
            "data.image_size=32",
            "batch.global_size=32",
            "run.progress=false",
            "run.log_every=4",
            "run.device=cuda",
            "run.bf16=true",
            "run.channels_last=true",
            "data.holdout_fraction=0.2",
            "run.checkpoint_every=10",
            *extra,
        ],
    )


def test_bf16_channels_last_training_learns_on_the_gpu(tmp_path):
    out = tmp_path / "run"
    summary = main(_config(out, "run.steps=40"), loader_factory=fake_factory)
    losses = _losses(out)
    assert sorted(losses) == list(range(1, 41))
    assert np.mean([losses[s] for s in range(33, 41)]) < 0.7 * np.mean([losses[s] for s in range(1, 9)])
    assert summary["eval"]["mAP"] > 0.6
    state = load_checkpoint(latest_checkpoint(out))
    assert state["rng"]["cuda"] and all(t.device.type == "cpu" for t in state["model"].values())


def test_gpu_run_resumes_where_it_stopped(tmp_path):
    # cuDNN's backward kernels are not bit-reproducible, so the resumed losses are compared loosely;
    # a resume that lost the weights or the optimizer would start again near the initial loss
    extra = ("schedule.kind=constant", "run.seed=1")
    main(_config(tmp_path / "full", "run.steps=30", *extra), loader_factory=fake_factory)
    main(_config(tmp_path / "leg", "run.steps=20", *extra), loader_factory=fake_factory)
    main(_config(tmp_path / "leg", "run.steps=30", *extra), resume="auto", loader_factory=fake_factory)
    full, leg = _losses(tmp_path / "full"), _losses(tmp_path / "leg")
    assert sorted(leg) == list(range(1, 31))
    assert abs(np.mean([leg[s] for s in range(21, 31)]) - np.mean([full[s] for s in range(21, 31)])) < 0.1
    assert np.mean([leg[s] for s in range(21, 31)]) < 0.7 * np.mean([leg[s] for s in range(1, 6)])
