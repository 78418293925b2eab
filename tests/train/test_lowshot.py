"""Low-shot linear probes (k images per class, several seeds) and fine-tuning a ViT at a larger size than it
was pretrained at (position-embedding interpolation), from the library and through `tagstream transfer`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tagstream.train.lowshot import LowShotConfig, low_shot, parse_shots, sample_shots
from tagstream.train.models import adapt_state, build_model
from tests.helpers.train_fakes import fake_factory, fake_run_config
from tests.helpers.transfer_data import downstream_datasets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sample_shots_draws_k_of_every_class_per_seed():
    labels = np.repeat(np.arange(3), [10, 8, 9])
    a = sample_shots(labels, 5, num_classes=3, seed=0)
    assert np.bincount(labels[a], minlength=3).tolist() == [5, 5, 5] and len(set(a)) == 15
    assert np.array_equal(a, sample_shots(labels, 5, num_classes=3, seed=0))
    assert not np.array_equal(a, sample_shots(labels, 5, num_classes=3, seed=1))
    with pytest.raises(ValueError, match="9-shot needs 9 training images of every class; class 1 has 8"):
        sample_shots(labels, 9, num_classes=3, seed=0)


def test_parse_shots_and_config_refusals():
    assert parse_shots("1, 5,10,25") == (1, 5, 10, 25)
    for bad in ("1,x", "0,5", "5,5"):
        with pytest.raises(ValueError, match="shots="):
            parse_shots(bad)
    with pytest.raises(ValueError, match="seeds=0"):
        LowShotConfig(shots=(1,), seeds=0)


def _gaussians(rng, n_per, k, d, sep):
    y = np.repeat(np.arange(k), n_per)
    means = np.zeros((k, d))
    means[np.arange(k), np.arange(k)] = sep
    return rng.standard_normal((len(y), d)) + means[y], y


def test_more_shots_score_higher_and_no_signal_scores_chance():
    rng = np.random.default_rng(0)
    xtr, ytr = _gaussians(rng, 40, 4, 8, 1.5)
    xev, yev = _gaussians(rng, 500, 4, 8, 1.5)
    res = low_shot(xtr, ytr, xev, yev, num_classes=4, config=LowShotConfig(shots=(1, 25), seeds=5))
    assert res["1"]["top1_mean"] + 0.1 < res["25"]["top1_mean"] and len(res["1"]["top1"]) == 5
    assert res["1"]["top1_std"] > 0 and res["25"]["train_images"] == 100
    # noise features: chance is 1/4; 4 x 2000 eval images put the binomial SE near 0.005
    noise = low_shot(
        rng.standard_normal((160, 8)),
        ytr,
        rng.standard_normal((2000, 8)),
        rng.integers(0, 4, 2000),
        num_classes=4,
        config=LowShotConfig(shots=(10,), seeds=3),
    )
    assert noise["10"]["top1_mean"] == pytest.approx(0.25, abs=0.05)
    # unlabelled rows (-1) are skipped on both sides
    ytr_gap = ytr.copy()
    ytr_gap[:3] = -1
    ok = low_shot(
        xtr,
        ytr_gap,
        xev,
        np.where(np.arange(len(yev)) < 10, -1, yev),
        num_classes=4,
        config=LowShotConfig(shots=(5,), seeds=1),
    )
    assert 0.25 < ok["5"]["top1_mean"] <= 1


def test_position_embedding_interpolation_keeps_the_class_token_and_a_constant_grid():
    net = build_model("vit_tiny_8", 3, image_size=16)
    state = net.state_dict()
    pos = state["encoder.pos_embedding"]  # (1, 1 + 2*2, 32)
    pos[:, 1:] = torch.arange(32, dtype=pos.dtype)  # the same vector at every grid position
    big = adapt_state("vit_tiny_8", state, image_size=32)["encoder.pos_embedding"]
    assert big.shape == (1, 1 + 4 * 4, 32)
    assert torch.equal(big[:, :1], pos[:, :1])
    torch.testing.assert_close(big[:, 1:], pos[:, 1:2].expand(1, 16, 32))
    build_model("vit_tiny_8", 3, image_size=32).load_state_dict(adapt_state("vit_tiny_8", state, image_size=32))
    conv = build_model("regnet_y_tiny", 3).state_dict()
    assert adapt_state("regnet_y_tiny", conv, image_size=384) is conv


def test_transfer_cli_low_shot_and_vit_finetune_at_a_larger_size(tmp_path):
    from click.testing import CliRunner

    from tagstream.tools.cli import main
    from tagstream.train.checkpoint import latest_checkpoint
    from tagstream.train.loop import main as main_loop

    train_ds, eval_ds = downstream_datasets(tmp_path)
    out = tmp_path / "low.json"
    res = CliRunner().invoke(
        main,
        [
            "transfer",
            "--train",
            str(train_ds),
            "--eval",
            str(eval_ds),
            "--model",
            "regnet_y_tiny",
            "--image-size",
            "32",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--shots",
            "1,5",
            "--shot-seeds",
            "3",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "1-shot" in res.output and "5-shot" in res.output
    low = json.loads(out.read_text())["results"]["random"]["low_shot"]
    assert set(low) == {"1", "5"} and all(len(v["top1"]) == 3 and 0 <= v["top1_mean"] <= 1 for v in low.values())

    res = CliRunner().invoke(
        main,
        [
            "transfer",
            "--train",
            str(train_ds),
            "--eval",
            str(eval_ds),
            "--model",
            "regnet_y_tiny",
            "--image-size",
            "32",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--shots",
            "9",
        ],
    )
    assert res.exit_code != 0 and "9-shot needs 9 training images of every class" in res.output

    # a ViT pretrained at 16 px (two steps of the loop), fine-tuned at 32: its 2x2 position grid becomes 4x4
    main_loop(fake_run_config(tmp_path / "vit", "model.name=vit_tiny_8", "run.steps=2"), loader_factory=fake_factory)
    ckpt = latest_checkpoint(tmp_path / "vit")
    out = tmp_path / "ft.json"
    res = CliRunner().invoke(
        main,
        [
            "transfer",
            "--checkpoint",
            str(ckpt),
            "--train",
            str(train_ds),
            "--eval",
            str(eval_ds),
            "--mode",
            "finetune",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--finetune-batch-size",
            "8",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["image_size"] == 32 and report["model"] == "vit_tiny_8"
    assert np.isfinite(report["results"]["pretrained"]["last_loss"])
    res = CliRunner().invoke(
        main,
        [
            "transfer",
            "--checkpoint",
            str(ckpt),
            "--train",
            str(train_ds),
            "--eval",
            str(eval_ds),
            "--mode",
            "finetune",
            "--image-size",
            "36",
            "--workers",
            "0",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code != 0 and "must be a multiple of vit_tiny_8's patch size 8" in res.output


def test_backbone_size_of_a_progressively_resized_run_is_its_last(tmp_path):
    from tagstream.train.checkpoint import latest_checkpoint
    from tagstream.train.loop import main as main_loop
    from tagstream.train.transfer import load_backbone

    main_loop(
        fake_run_config(tmp_path / "run", 'data.image_size="8@0,16@1"', "run.steps=2"), loader_factory=fake_factory
    )
    _, info = load_backbone(str(latest_checkpoint(tmp_path / "run")))
    assert info["image_size"] == 16 and info["source"] == "checkpoint"
