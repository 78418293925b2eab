"""Optimizer parts of the recipes: no-decay parameter groups, gradient clipping, label smoothing against its definition."""

from __future__ import annotations

import pytest
import torch

from tagstream.train.config import OptimConfig
from tagstream.train.losses import build_loss, soft_cross_entropy
from tagstream.train.models import build_model
from tagstream.train.optim import build_optimizer, clip_gradients, layer_decay_groups, layer_depths, param_groups


def test_no_decay_group_holds_biases_norms_and_vit_embeddings():
    model = build_model("vit_tiny_8", 4, image_size=16)
    decayed, plain = param_groups(
        model, OptimConfig(name="adamw", nesterov=False, weight_decay=0.1, decay_norm_and_bias=False)
    )
    names = {id(p): n for n, p in model.named_parameters()}
    plain_names = {names[id(p)] for p in plain["params"]}
    assert {"class_token", "encoder.pos_embedding", "heads.head.bias", "encoder.ln.weight"} <= plain_names
    assert all(p.ndim >= 2 for p in decayed["params"]) and "conv_proj.weight" not in plain_names
    assert (decayed["weight_decay"], plain["weight_decay"]) == (0.1, 0.0)
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
    (only,) = param_groups(model, OptimConfig())
    assert len(only["params"]) == len(list(model.parameters())) and only["weight_decay"] == 1e-4


def test_optimizer_kinds_and_settings():
    model = build_model("regnet_y_tiny", 3)
    sgd = build_optimizer(model, OptimConfig(momentum=0.8), lr=0.5)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.param_groups[0]["lr"] == 0.5
    adamw = build_optimizer(model, OptimConfig(name="adamw", nesterov=False, betas=(0.9, 0.95)), lr=1e-3)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.95)


def test_clip_gradients_caps_the_global_norm():
    model = torch.nn.Linear(4, 3)
    model.weight.grad = torch.full_like(model.weight, 2.0)
    model.bias.grad = torch.full_like(model.bias, 2.0)
    before = clip_gradients(model, 1.0)
    assert float(before) == pytest.approx(2.0 * 15**0.5)
    after = torch.cat([model.weight.grad.flatten(), model.bias.grad]).norm()
    assert float(after) == pytest.approx(1.0, rel=1e-5)
    assert clip_gradients(model, 0.0) is None


def test_label_smoothing_is_cross_entropy_against_smoothed_targets():
    torch.manual_seed(0)
    logits = torch.randn(5, 7)
    t = torch.zeros(5, 7)
    t[torch.arange(5), torch.tensor([0, 3, 3, 6, 1])] = 0.5
    t[torch.arange(5), torch.tensor([2, 2, 4, 5, 0])] += 0.5
    eps = 0.1
    expected = soft_cross_entropy(logits, (1 - eps) * t + eps / 7)
    loss = build_loss("softmax", label_smoothing=eps)
    assert float(loss(logits, t)) == pytest.approx(float(expected), rel=1e-6)
    ids = t.topk(2, dim=1).indices
    sparse = (ids, t.gather(1, ids))
    assert float(loss(logits, sparse)) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="needs the softmax loss"):
        build_loss("sigmoid", label_smoothing=0.1)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.name=adam", r"optim.name='adam' is not one of \('sgd', 'adamw'\)"),
        ("optim.name=adamw", "optim.nesterov=true applies to optim.name='sgd'"),
        ("optim.betas=[0.9]", "optim.betas=.* must be two values in"),
        ("optim.grad_clip=-1", "grad_clip=-1.0 >= 0"),
        ("optim.grad_clip=true", "optim.grad_clip: expected float"),
        ("model.label_smoothing=1.0", r"must be in \[0, 1\)"),
        ("model.loss=sigmoid", "needs model.loss='softmax'"),
        ("data.image_size=160@1", "must start at epoch 0"),
        ("data.image_size=big", "neither a size nor a schedule"),
        ("data.image_size=2.5", "data.image_size: expected int or str"),
        ("optim.betas_typo=1", r"unknown key\(s\) \['optim.betas_typo'\]"),
    ],
)
def test_new_config_keys_are_validated(override, message):
    from tagstream.train.config import load_config

    base = ["data.dataset=d", "data.vocab=v", "run.out_dir=o", "model.label_smoothing=0.1"]
    if override.startswith("model.label_smoothing"):
        base = base[:-1]
    with pytest.raises(ValueError, match=message):
        load_config(None, [*base, override])


def test_image_size_schedule_is_kept_in_canonical_form():
    from tagstream.train.config import load_config

    c = load_config(None, ["data.dataset=d", "data.vocab=v", "run.out_dir=o", 'data.image_size="160@0, 192@2,224@4"'])
    assert c.data.image_size == "160@0,192@2,224@4" and c.data.final_image_size == 224
    assert c.data.size_schedule == ((0, 160), (2, 192), (4, 224))
    assert (
        load_config(None, ["data.dataset=d", "data.vocab=v", "run.out_dir=o", "data.image_size=96"]).data.image_size
        == 96
    )


@pytest.mark.parametrize(
    "name, head, first, block",
    [
        (
            "vit_tiny_8",
            3,
            ["class_token", "conv_proj.weight", "encoder.pos_embedding"],
            ("encoder.layers.encoder_layer_1.ln_1.weight", 2),
        ),
        ("regnet_y_tiny", 4, ["stem.0.weight", "stem.1.bias"], ("trunk_output.block2.block2-0.proj.0.weight", 2)),
        ("resnet18", 5, ["conv1.weight", "bn1.weight"], ("layer3.0.conv1.weight", 3)),
    ],
)
def test_layer_depths_count_the_blocks_from_the_stem_to_the_head(name, head, first, block):
    model = build_model(name, 3, image_size=16) if name.startswith("vit") else build_model(name, 3)
    depths, deepest = layer_depths(model)
    names = [n for n, _ in model.named_parameters()]
    assert deepest == head and set(depths) == set(names)
    assert all(depths[n] == 0 for n in first) and depths[block[0]] == block[1]
    assert depths[names[-1]] == head  # the classifier
    assert [depths[n] for n in names] == sorted(depths[n] for n in names)  # never shallower further down


def test_layer_decay_groups_scale_each_depth():
    model = build_model("vit_tiny_8", 3, image_size=16)
    depths, head = layer_depths(model)
    groups = layer_decay_groups(model, 0.2, 0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert lr_of[id(p)] == pytest.approx(0.2 * 0.5 ** (head - depths[name]))
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    (one,) = layer_decay_groups(model, 0.2, 1.0)  # off: the plain optimizer of before
    assert one["lr"] == 0.2 and len(one["params"]) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="layer decay"):
        layer_decay_groups(model, 0.2, 0.0)
