"""The moving average of the weights (optim.ema): its update rule, its place in checkpoints, an exact resume,
evaluation of both, and transfer/embed from the average."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tagstream.train.checkpoint import latest_checkpoint, load_checkpoint
from tagstream.train.ema import build_ema, ema_weights
from tagstream.train.loop import main
from tests.helpers.train_fakes import fake_factory
from tests.helpers.train_fakes import fake_run_config as _config


def test_each_update_moves_the_average_a_fraction_towards_the_weights():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    assert build_ema(model, 0.0) is None  # off
    ema = build_ema(model, 0.75)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.add_(4.0)
    ema.update_parameters(model)  # the first update copies (AveragedModel: n_averaged 0)
    ema.update_parameters(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(2.0)
    ema.update_parameters(model)
    got = ema_weights({"ema": ema.state_dict()}, "x")
    assert set(got) == set(model.state_dict())
    torch.testing.assert_close(got["0.weight"], 0.75 * (start["0.weight"] + 1) + 0.25 * (start["0.weight"] + 3))
    torch.testing.assert_close(
        got["1.running_mean"], start["1.running_mean"] + 4
    )  # buffers averaged too (unchanged here)
    with pytest.raises(ValueError, match="no EMA weights.*optim.ema"):
        ema_weights({"model": {}}, "c.pt")


def test_the_average_is_checkpointed_resumed_exactly_and_evaluated(tmp_path):
    extra = (
        "schedule.kind=constant",
        "run.checkpoint_every=5",
        "run.seed=3",
        "optim.ema=0.8",
        "data.holdout_fraction=0.2",
        "run.eval_every=7",
    )
    main(_config(tmp_path / "full", "run.steps=14", *extra), loader_factory=fake_factory)
    main(_config(tmp_path / "leg", "run.steps=10", *extra), loader_factory=fake_factory)
    main(_config(tmp_path / "leg", "run.steps=14", *extra), resume="auto", loader_factory=fake_factory)
    a, b = (load_checkpoint(latest_checkpoint(tmp_path / run)) for run in ("full", "leg"))
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])  # bit for bit after a resume
    assert int(a["ema"]["n_averaged"]) == 14
    averaged, trained = ema_weights(a, "full"), a["model"]
    assert set(averaged) == set(trained)
    assert any(not torch.equal(averaged[k], trained[k]) for k in trained if trained[k].is_floating_point())
    evals = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["kind"] == "eval"]
    assert [e["step"] for e in evals] == [7, 14] and all("ema_mAP" in e and "mAP" in e for e in evals)
    without = tmp_path / "plain"
    main(_config(without, "run.steps=2"), loader_factory=fake_factory)
    assert "ema" not in load_checkpoint(latest_checkpoint(without))  # off by default: checkpoints as before


def test_transfer_and_embed_read_the_average(tmp_path, tiny_dataset):
    from tagstream.tools.vocab.build import VocabOptions, build_vocab
    from tagstream.train.embed import EmbedConfig, embed
    from tagstream.train.transfer import load_backbone

    main(_config(tmp_path / "run", "run.steps=3", "optim.ema=0.5", "data.image_size=32"), loader_factory=fake_factory)
    ckpt = str(latest_checkpoint(tmp_path / "run"))
    state = load_checkpoint(ckpt)
    net, info = load_backbone(ckpt, weights="ema")
    assert info["weights"] == "ema"
    averaged = ema_weights(state, ckpt)
    assert all(torch.equal(v, averaged[k]) for k, v in net.state_dict().items())
    net, info = load_backbone(ckpt)
    assert info["weights"] == "model" and all(torch.equal(v, state["model"][k]) for k, v in net.state_dict().items())
    main(_config(tmp_path / "plain", "run.steps=1", "data.image_size=32"), loader_factory=fake_factory)
    with pytest.raises(ValueError, match="no EMA weights"):
        load_backbone(str(latest_checkpoint(tmp_path / "plain")), weights="ema")
    ds = tiny_dataset(10, shard_size=5)
    build_vocab(ds, "labels", VocabOptions())
    out = tmp_path / "emb.npz"
    for weights in ("model", "ema"):
        embed(
            EmbedConfig(
                data=str(ds),
                out=str(out),
                checkpoint=ckpt,
                vocab="labels",
                workers=0,
                device="cpu",
                progress=False,
                weights=weights,
            )
        )
        with np.load(out) as f:
            features = f[next(k for k in f.files if "feat" in k or "emb" in k)]
        if weights == "model":
            first = features
    assert features.shape == first.shape and not np.array_equal(features, first)
