"""Stage hand-off: `--init` loads another run's encoder (MAE or hashtags), drops heads and decoder, interpolates a
ViT's position embedding, records itself, and refuses a checkpoint that does not fit with one line."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from tagstream.train.checkpoint import latest_checkpoint, load_checkpoint
from tagstream.train.init import apply_init, read_init
from tagstream.train.loop import main
from tagstream.train.models import build_model
from tagstream.train.transfer import load_backbone
from tests.helpers.train_fakes import fake_factory, fake_run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAE = (
    "model.name=vit_tiny_8",
    "model.objective=mae",
    "model.decoder_dim=16",
    "model.decoder_layers=1",
    "model.decoder_heads=2",
    "data.image_size=32",
    "optim.name=adamw",
    "optim.nesterov=false",
)
VIT = ("model.name=vit_tiny_8", "optim.name=adamw", "optim.nesterov=false")


@pytest.fixture(scope="module")
def mae_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("mae") / "run"
    main(fake_run_config(out, *MAE, "run.steps=3", "run.threads=1"), loader_factory=fake_factory)
    return latest_checkpoint(out)


def test_mae_encoder_starts_a_hashtag_run_at_another_size(mae_checkpoint, tmp_path):
    saved = load_checkpoint(mae_checkpoint)["model"]
    torch.manual_seed(1)
    model = build_model("vit_tiny_8", 6, image_size=48)
    head_before = model.heads.head.weight.clone()
    info = apply_init(
        model,
        read_init(mae_checkpoint, model_name="vit_tiny_8"),
        path=mae_checkpoint,
        model_name="vit_tiny_8",
        image_size=48,
    )
    assert info["objective"] == "mae" and info["position_embedding"] == "interpolated"
    assert torch.equal(model.conv_proj.weight, saved["encoder.conv_proj.weight"])
    assert torch.equal(
        model.encoder.layers[1].mlp[0].weight, saved["encoder.encoder.layers.encoder_layer_1.mlp.0.weight"]
    )
    assert model.encoder.pos_embedding.shape == (1, 37, 32)  # 6 x 6 patches + class token, from 4 x 4
    assert torch.equal(model.encoder.pos_embedding[:, :1], saved["encoder.encoder.pos_embedding"][:, :1])
    assert torch.equal(model.heads.head.weight, head_before)  # the head is the new run's own

    out = tmp_path / "hashtags"
    main(
        fake_run_config(
            out, *VIT, "data.image_size=48", "run.steps=2", f"model.init={json.dumps(str(mae_checkpoint))}"
        ),
        loader_factory=fake_factory,
    )
    assert json.loads((out / "config.json").read_text())["model"]["init"] == str(mae_checkpoint)
    start = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert start["init_from"]["objective"] == "mae" and start["init_from"]["position_embedding"] == "interpolated"


def test_a_hashtag_run_starts_another_with_a_new_head(tmp_path):
    first = tmp_path / "first"
    main(fake_run_config(first, "run.steps=2"), loader_factory=fake_factory)  # regnet_y_tiny, 6 classes
    state = read_init(latest_checkpoint(first), model_name="regnet_y_tiny")
    model = build_model("regnet_y_tiny", 11, image_size=16)
    info = apply_init(model, state, path="first", model_name="regnet_y_tiny", image_size=16)
    assert info["objective"] == "hashtags" and info["position_embedding"] == "as saved"
    assert model.fc.out_features == 11
    assert torch.equal(model.stem[0].weight, state["model"]["stem.0.weight"])


def test_transfer_reads_an_mae_checkpoint_as_an_encoder(mae_checkpoint):
    net, info = load_backbone(str(mae_checkpoint))
    assert info["head_classes"] == 0 and info["image_size"] == 32 and info["model"] == "vit_tiny_8"
    saved = load_checkpoint(mae_checkpoint)["model"]
    assert torch.equal(net.class_token, saved["encoder.class_token"])


def test_refusals_leave_no_run_behind(mae_checkpoint, tmp_path):
    regnet = tmp_path / "regnet"
    main(fake_run_config(regnet, "run.steps=1"), loader_factory=fake_factory)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    cases = [
        (latest_checkpoint(regnet), "holds a 'regnet_y_tiny' encoder, but this run builds 'vit_tiny_8'"),
        (tmp_path / "missing.pt", "does not exist"),
        (garbage, "cannot be read"),
    ]
    for path, message in cases:
        out = tmp_path / f"refused-{path.stem}"
        with pytest.raises(ValueError, match=message) as err:
            main(
                fake_run_config(out, *VIT, "data.image_size=32", "run.steps=1", f"model.init={json.dumps(str(path))}"),
                loader_factory=fake_factory,
            )
        assert "\n" not in str(err.value)
        assert not (out / "config.json").exists()
    # the architecture's weights themselves must fit: a ViT of another width under the same name is named
    state = read_init(mae_checkpoint, model_name="vit_tiny_8")
    state["model"] = {k: (v[..., :-1] if k.endswith("conv_proj.weight") else v) for k, v in state["model"].items()}
    with pytest.raises(ValueError, match="has other shapes for conv_proj.weight"):
        apply_init(build_model("vit_tiny_8", 3, image_size=32), state, path="x", model_name="vit_tiny_8", image_size=32)


def test_cli_mae_without_vocabulary_then_hashtags_with_init(tiny_dataset, tmp_path):
    from tagstream.tools.cli import main as cli
    from tagstream.tools.vocab.build import VocabOptions, build_vocab

    ds = tiny_dataset(24, shard_size=10)
    build_vocab(ds, "v", VocabOptions())
    small = [
        "--set",
        "data.image_size=32",
        "--set",
        "batch.global_size=8",
        "--set",
        "data.holdout_fraction=0.2",
        "--set",
        "run.progress=false",
    ]
    mae = CliRunner().invoke(
        cli,
        [
            "train",
            "--config",
            "tiny-vit-mae-cpu",
            "--dataset",
            str(ds),
            "--out",
            str(tmp_path / "mae"),
            "--steps",
            "3",
            *small,
        ],
    )
    assert mae.exit_code == 0, mae.output
    assert "built the one-class vocabulary 'images'" in mae.output and "eval mae_loss" in mae.output
    ckpt = latest_checkpoint(tmp_path / "mae")
    assert load_checkpoint(ckpt)["config"]["data"]["vocab"] == "images"
    ok = CliRunner().invoke(
        cli,
        [
            "train",
            "--config",
            "tiny-vit-cpu",
            "--dataset",
            str(ds),
            "--vocab",
            "v",
            "--out",
            str(tmp_path / "tags"),
            "--steps",
            "2",
            "--init",
            str(ckpt),
            *small,
        ],
    )
    assert ok.exit_code == 0, ok.output
    refused = CliRunner().invoke(
        cli,
        [
            "train",
            "--config",
            "tiny-cpu",
            "--dataset",
            str(ds),
            "--vocab",
            "v",
            "--out",
            str(tmp_path / "no"),
            "--steps",
            "2",
            "--init",
            str(ckpt),
            *small,
        ],
    )
    assert refused.exit_code == 1 and refused.output.count("\n") == 1
    assert "this run builds 'regnet_y_tiny'" in refused.output
