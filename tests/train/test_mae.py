"""The MAE stage: its loss on a known input, the model's masking, learning, held-out loss and bit-exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tagstream.train.checkpoint import latest_checkpoint, load_checkpoint
from tagstream.train.config import ModelConfig
from tagstream.train.loop import main
from tagstream.train.mae import MaskKeys, build_mae, mae_loss, patchify, per_image_loss
from tagstream.train.rundir import step_losses
from tests.helpers.train_fakes import fake_factory, fake_run_config

MAE = (
    "model.name=vit_tiny_8",
    "model.objective=mae",
    "model.decoder_dim=16",
    "model.decoder_layers=1",
    "model.decoder_heads=2",
    "data.image_size=32",
    "optim.name=adamw",
    "optim.nesterov=false",
    "optim.base_lr=0.05",
    "optim.weight_decay=0.05",
)


def test_patchify_orders_patches_as_the_vit():
    img = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    p = patchify(img, 2)
    assert p.shape == (2, 6, 12)
    # patch 4 = grid row 1, column 1: pixels rows 2-3, columns 2-3, channel last
    expected = img[1, :, 2:4, 2:4].permute(1, 2, 0).reshape(-1)
    assert torch.equal(p[1, 4], expected)


def test_loss_on_a_known_input():
    target = torch.tensor([[[1.0, 3.0], [0.0, 0.0], [5.0, 5.0]]])  # 1 image, 3 patches of 2 values
    pred = torch.tensor([[[0.0, 0.0], [9.0, 9.0], [1.0, 1.0]]])
    mask = torch.tensor([[True, False, True]])
    # raw pixels: patch 0 error (1 + 9) / 2 = 5, patch 2 (16 + 16) / 2 = 16; the visible patch 1 does not count
    assert mae_loss(pred, target, mask, norm_pix=False).item() == pytest.approx(10.5)
    # normalised: patch 0 -> (-1/sqrt(2+1e-6), 1/sqrt(2+1e-6)); patch 2 is constant -> 0, 0
    a = 1 / np.sqrt(2 + 1e-6)
    assert mae_loss(pred, target, mask).item() == pytest.approx(((a * a + a * a) / 2 + 1.0) / 2, rel=1e-6)
    two = per_image_loss(
        pred.repeat(2, 1, 1),
        target.repeat(2, 1, 1),
        torch.tensor([[True, False, True], [False, True, False]]),
        norm_pix=False,
    )
    assert two.tolist() == pytest.approx([10.5, 81.0])


def test_the_encoder_sees_only_the_visible_patches():
    torch.manual_seed(0)
    model = build_mae(
        ModelConfig(name="vit_tiny_8", objective="mae", decoder_dim=16, decoder_layers=1, decoder_heads=2),
        image_size=32,
    )
    assert model.patches == 16 and not any(k.startswith("encoder.heads") for k in model.state_dict())
    keys = MaskKeys(seed=0, ratio=0.75, patches=16, rank=0, per_rank=2)
    mask = keys.train(0, 0, 2)
    images = torch.randn(2, 3, 32, 32)
    tokens, visible = model.encode(images, mask)
    assert tokens.shape == (2, 1 + 4, 32)
    assert all(set(visible[i].tolist()) == set(np.flatnonzero(~mask[i].numpy())) for i in range(2))
    # changing a masked patch's pixels leaves the encoding alone; changing a visible one does not
    row, col = divmod(int(np.flatnonzero(mask[0].numpy())[0]), 4)
    other = images.clone()
    other[0, :, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] += 5
    assert torch.allclose(model.encode(other, mask)[0][0], tokens[0])
    row, col = divmod(int(visible[0, 0]), 4)
    other[0, :, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] += 5
    assert not torch.allclose(model.encode(other, mask)[0][0], tokens[0])
    loss = model(images, mask)
    loss.backward()
    assert loss.item() > 0 and all(p.grad is not None for p in model.parameters())


def test_masks_of_a_global_batch_do_not_depend_on_the_world_size():
    one = MaskKeys(seed=5, ratio=0.75, patches=16, rank=0, per_rank=8).train(2, 3, 8)
    halves = [MaskKeys(seed=5, ratio=0.75, patches=16, rank=r, per_rank=4).train(2, 3, 4) for r in (0, 1)]
    assert torch.equal(one, torch.cat(halves))
    held = MaskKeys(seed=5, ratio=0.75, patches=16, rank=1, per_rank=4)
    assert torch.equal(held.held_out([3, 9])[1], held.held_out([9])[0])


def test_mae_run_learns_and_reports_held_out_loss(tmp_path):
    out = tmp_path / "mae"
    # the fake images are flat colours plus noise: per-patch normalised targets would be the noise alone
    summary = main(
        fake_run_config(
            out, *MAE, "model.norm_pix_loss=false", "run.steps=30", "data.holdout_fraction=0.2", "optim.ema=0.9"
        ),
        loader_factory=fake_factory,
    )
    losses = step_losses(out)
    first, last = np.mean([losses[s] for s in range(1, 6)]), np.mean([losses[s] for s in range(26, 31)])
    assert last < 0.9 * first, (first, last)
    assert summary["eval"]["images"] == 48 and 0 < summary["eval"]["mae_loss"] < first
    assert "ema_mae_loss" in summary["eval"]
    state = load_checkpoint(latest_checkpoint(out))
    assert state["config"]["model"]["objective"] == "mae" and any(k.startswith("decoder_") for k in state["model"])
    start = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][0]
    assert start["objective"] == "mae"


def test_interrupted_mae_run_resumes_bit_identically(tmp_path):
    extra = (*MAE, "schedule.kind=constant", "run.checkpoint_every=5", "run.seed=3", "optim.ema=0.9")
    main(fake_run_config(tmp_path / "full", "run.steps=12", *extra), loader_factory=fake_factory)
    main(fake_run_config(tmp_path / "leg", "run.steps=5", *extra), loader_factory=fake_factory)
    main(fake_run_config(tmp_path / "leg", "run.steps=12", *extra), resume="auto", loader_factory=fake_factory)
    full, leg = step_losses(tmp_path / "full"), step_losses(tmp_path / "leg")
    assert [leg[s] for s in range(1, 13)] == [full[s] for s in range(1, 13)]
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "leg"))
    for part in ("model", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])


def test_mae_needs_a_vit():
    with pytest.raises(ValueError, match="needs a ViT"):
        ModelConfig(name="resnet18", objective="mae")
    with pytest.raises(ValueError, match="objective"):
        ModelConfig(objective="clip")
    with pytest.raises(ValueError, match="mask_ratio"):
        ModelConfig(name="vit_tiny_8", objective="mae", mask_ratio=1.0)


def test_mae_recipes_carry_the_mae_settings_and_train():
    from tagstream.train.config import load_config

    for name in ("vit_b16-mae", "vit_l16-mae", "vit_h14-mae"):
        c = load_config(name, ["data.dataset=fake", "run.out_dir=unused"])  # no vocabulary needed
        assert (c.model.objective, c.model.mask_ratio, c.model.decoder_dim, c.model.decoder_layers) == (
            "mae",
            0.75,
            512,
            8,
        )
        assert c.optim.betas == (0.9, 0.95) and c.optim.weight_decay == 0.05 and c.lr == pytest.approx(1.5e-4 * 16)
        assert c.data.sampling == "natural" and c.batch.global_size == 4096
    c = load_config("vit_b16-mae", ["data.dataset=fake", "run.out_dir=unused", "data.image_size=32"])
    torch.manual_seed(0)
    model = build_mae(c.model, image_size=32)  # the real ViT-B/16 and decoder, 2 x 2 patches
    keys = MaskKeys(seed=0, ratio=c.model.mask_ratio, patches=model.patches, rank=0, per_rank=2)
    loss = model(torch.randn(2, 3, 32, 32), keys.train(0, 0, 2))
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.conv_proj.weight.grad is not None
