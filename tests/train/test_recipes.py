"""The SWAG recipes: each loads, builds its model and takes optimizer steps on CPU (the three largest on the
meta device, checked against torchvision's published parameter counts), trains and resumes exactly through
the loop; progressive resizing through `tagstream train` on a real dataset, resumed across the size change."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from tagstream.tools.cli import main as cli
from tagstream.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from tagstream.train.config import load_config, recipe_names
from tagstream.train.loop import main
from tagstream.train.losses import build_loss
from tagstream.train.models import build_model
from tagstream.train.optim import build_optimizer
from tagstream.train.rundir import step_losses as _losses
from tests.helpers.datasets import make_index_dataset
from tests.helpers.train_fakes import fake_factory

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SWAG = ["vit_b16-swag", "vit_l16-swag", "vit_h14-swag", "regnety_16gf-swag", "regnety_32gf-swag", "regnety_128gf-swag"]
# torchvision's parameter counts of these architectures with a 1000-way head (their weights' metadata)
PUBLISHED_PARAMS = {
    "vit_l_16": 304_326_632,
    "vit_h_14": 632_045_800,
    "regnet_y_32gf": 145_046_770,
    "regnet_y_128gf": 644_812_894,
}
STAND_IN = {"vit": "vit_tiny_8", "regnet": "regnet_y_tiny"}  # same family, CPU-sized: for whole-run tests


def _recipe(name: str, *extra: str):
    return load_config(name, ["data.dataset=fake", "data.vocab=fake", "run.out_dir=unused", *extra])


def test_swag_recipes_ship_with_the_published_settings():
    assert set(SWAG) <= set(recipe_names())
    for name in SWAG:
        c = _recipe(name)
        vit = c.model.name.startswith("vit_")
        assert c.optim.name == ("adamw" if vit else "sgd") and c.batch.global_size == 8192
        assert c.data.image_size == 224 and c.data.sampling == "sqrt" and c.model.label_smoothing == 0.1
        assert c.run.bf16 and c.schedule.warmup_epochs > 0
        assert (c.optim.grad_clip > 0) == vit and c.optim.decay_norm_and_bias != vit


@pytest.mark.parametrize("name", ["vit_b16-swag", "regnety_16gf-swag"])
def test_recipe_model_trains_on_cpu(name):
    """The real architecture at a small input (32 px: 2x2 patches for ViT-B/16), steps of the recipe's optimizer.

    Two steps: torchvision's ViT starts with a zero head, so only the second step's gradients reach the trunk."""
    c = _recipe(name, "data.image_size=32")
    torch.manual_seed(0)
    model = build_model(c.model.name, 10, image_size=32)
    opt = build_optimizer(model, c.optim, lr=c.lr)
    loss_fn = build_loss(c.model.loss, label_smoothing=c.model.label_smoothing)
    x, t = torch.randn(2, 3, 32, 32), torch.softmax(torch.randn(2, 10), dim=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):
        loss = loss_fn(model(x), t)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.optim.grad_clip or float("inf"))
        opt.step()
        assert torch.isfinite(loss)
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before)  # every parameter received an update


@pytest.mark.parametrize("name", ["vit_l16-swag", "vit_h14-swag", "regnety_32gf-swag", "regnety_128gf-swag"])
def test_large_recipe_models_on_the_meta_device(name, monkeypatch):
    """ViT-L/16, ViT-H/14 and RegNetY-128GF need 5-10 GB for one real CPU step (RegNetY-32GF ~2 GB and 8 s), too
    much for the shared test machine: built on the meta device (shapes, no memory), with torchvision's published
    parameter count, a forward pass and the recipe's optimizer over every parameter at 224 px."""
    from torchvision.models.regnet import BlockParams

    compute = BlockParams.from_init_params.__func__

    def widths_on_cpu(cls, *args, **kwargs):  # RegNet derives its stage widths from real tensors
        with torch.device("cpu"):
            return compute(cls, *args, **kwargs)

    monkeypatch.setattr(BlockParams, "from_init_params", classmethod(widths_on_cpu))
    c = _recipe(name)
    with torch.device("meta"):
        model = build_model(c.model.name, 1000, image_size=224)
        out = model(torch.empty(2, 3, 224, 224))
        opt = build_optimizer(model, c.optim, lr=c.lr)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMS[c.model.name]
    assert out.shape == (2, 1000)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def _resume_from(run, copy, step: int) -> None:
    """`copy` = `run` as it stood at checkpoint `step`: later checkpoints and metrics lines dropped."""
    shutil.copytree(run, copy)
    for path in list_checkpoints(copy):
        if int(path.stem.split("-")[1]) > step:
            path.unlink()
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    keep = [ln for ln in lines if json.loads(ln).get("kind") != "train" or json.loads(ln)["first_step"] <= step]
    (copy / "metrics.jsonl").write_text("".join(f"{ln}\n" for ln in keep))


@pytest.mark.parametrize("name", SWAG)
def test_recipe_trains_and_resumes_exactly(name, tmp_path):
    """The recipe's optimizer, schedule, smoothing and clipping through the loop, with a CPU-sized model of the
    same family (16 px, batch 16, 6 steps); a run resumed from step 3 ends with identical weights and losses."""
    family = "vit" if name.startswith("vit") else "regnet"
    extra = [
        f"model.name={STAND_IN[family]}",
        "data.image_size=16",
        "batch.global_size=16",
        "run.steps=6",
        "run.checkpoint_every=3",
        "run.threads=1",
        "run.progress=false",
        "run.log_every=1",
        "run.device=cpu",
        "data.holdout_fraction=0",
        "run.eval_every=0",
    ]
    full = tmp_path / "full"
    main(
        load_config(name, ["data.dataset=fake", "data.vocab=fake", f"run.out_dir={full}", *extra]),
        loader_factory=fake_factory,
    )
    _resume_from(full, tmp_path / "leg", 3)
    leg = tmp_path / "leg"
    main(
        load_config(name, ["data.dataset=fake", "data.vocab=fake", f"run.out_dir={leg}", *extra]),
        resume="auto",
        loader_factory=fake_factory,
    )
    a, b = _losses(full), _losses(leg)
    assert sorted(b) == list(range(1, 7)) and [a[s] for s in range(4, 7)] == [b[s] for s in range(4, 7)]
    wa, wb = load_checkpoint(latest_checkpoint(full))["model"], load_checkpoint(latest_checkpoint(leg))["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a[6] != a[1]  # the steps did change the model


def test_vit_refuses_a_size_schedule():
    with pytest.raises(ValueError, match="position embedding is built for one size"):
        _recipe("vit_b16-swag", 'data.image_size="160@0,224@1"')


def test_progressive_resizing_through_tagstream_train_resumes_across_the_change(tmp_path):
    """16 px in epoch 0, 24 px from epoch 1 (4 steps an epoch): checkpoint at step 6, mid-epoch after the
    change; the resumed run ends at step 8 with the uninterrupted run's losses and weights."""
    ds = make_index_dataset(tmp_path / "ds", n=48, shard_size=16).root
    args = [
        "train",
        "--config",
        "regnety_16gf-swag",
        "--dataset",
        str(ds),
        "--vocab",
        "v",
        "--model",
        "regnet_y_tiny",
        "--image-size",
        "16@0,24@1",
        "--batch-size",
        "8",
        "--steps",
        "8",
        "--device",
        "cpu",
        "--set",
        "data.samples_per_epoch=32",
        "--set",
        "data.holdout_fraction=0",
        "--set",
        "run.eval_every=0",
        "--set",
        "data.workers=1",
        "--set",
        "data.threads=1",
        "--set",
        "run.threads=1",
        "--set",
        "run.progress=false",
        "--set",
        "run.checkpoint_every=6",
        "--set",
        "run.log_every=1",
        "--set",
        "data.cpu_decoder=turbo",
    ]
    full, leg = tmp_path / "full", tmp_path / "leg"
    result = CliRunner().invoke(cli, [*args, "--out", str(full)])
    assert result.exit_code == 0, result.output
    state = load_checkpoint(list_checkpoints(full)[0])
    assert state["step"] == 6 and state["loader"]["epoch"] == 1 and state["loader"]["step"] == 2
    assert state["config"]["data"]["image_size"] == "16@0,24@1"
    _resume_from(full, leg, 6)
    result = CliRunner().invoke(cli, [*args, "--out", str(leg), "--resume"])
    assert result.exit_code == 0, result.output
    a, b = _losses(full), _losses(leg)
    assert [a[s] for s in (7, 8)] == [b[s] for s in (7, 8)]
    wa, wb = load_checkpoint(latest_checkpoint(full))["model"], load_checkpoint(latest_checkpoint(leg))["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
