"""Losses against hand-computed values; sparse targets equal their dense form."""

from __future__ import annotations

import math

import pytest
import torch

from tagstream.train.losses import build_loss, loader_targets, sigmoid_bce, soft_cross_entropy

LN3 = math.log(3.0)


def test_soft_cross_entropy_by_hand():
    # softmax([0, ln 3]) = [1/4, 3/4]
    logits = torch.tensor([[0.0, LN3], [0.0, LN3], [0.0, 0.0]])
    targets = torch.tensor([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    expected = [-math.log(0.75), -(0.5 * math.log(0.25) + 0.5 * math.log(0.75)), math.log(2.0)]
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(sum(expected) / 3, rel=1e-6)


def test_soft_cross_entropy_uniform_logits_is_log_classes():
    logits = torch.zeros(2, 4)
    targets = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(math.log(4.0), rel=1e-6)


def test_sigmoid_bce_by_hand():
    # sigmoid(0) = 1/2, sigmoid(ln 3) = 3/4; summed over classes, averaged over the batch
    logits = torch.tensor([[0.0, LN3], [LN3, 0.0]])
    targets = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    row0 = -math.log(0.5) - math.log(0.75)
    row1 = -math.log(0.75) - math.log(0.5)
    assert sigmoid_bce(logits, targets).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_sigmoid_bce_treats_soft_targets_as_positives():
    logits = torch.tensor([[0.3, -1.2, 2.0]])
    assert sigmoid_bce(logits, torch.tensor([[0.5, 0.0, 0.5]])).item() == pytest.approx(
        sigmoid_bce(logits, torch.tensor([[1.0, 0.0, 1.0]])).item()
    )


def test_sparse_targets_equal_dense():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, generator=g)
    ids = torch.tensor([[1, 4, -1], [0, -1, -1], [2, 3, 5]])
    w = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    dense = torch.zeros(3, 6)
    for r in range(3):
        for c, x in zip(ids[r].tolist(), w[r].tolist()):
            if c >= 0:
                dense[r, c] = x
    assert soft_cross_entropy(logits, (ids, w)).item() == pytest.approx(
        soft_cross_entropy(logits, dense).item(), rel=1e-6
    )
    assert sigmoid_bce(logits, (ids, w)).item() == pytest.approx(sigmoid_bce(logits, dense).item(), rel=1e-6)


def test_loss_is_float32_under_bf16_logits():
    logits = torch.zeros(2, 5, dtype=torch.bfloat16)
    loss = soft_cross_entropy(logits, torch.full((2, 5), 0.2))
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(math.log(5.0), rel=1e-6)


def test_gradient_of_soft_cross_entropy_is_softmax_minus_target():
    logits = torch.tensor([[0.0, LN3]], requires_grad=True)
    soft_cross_entropy(logits, torch.tensor([[0.5, 0.5]])).backward()
    assert torch.allclose(logits.grad, torch.tensor([[0.25 - 0.5, 0.75 - 0.5]]), atol=1e-6)


def test_names_and_refusals():
    assert build_loss("softmax") is soft_cross_entropy and build_loss("sigmoid") is sigmoid_bce
    assert loader_targets("softmax") == "soft" and loader_targets("sigmoid") == "multihot"
    with pytest.raises(ValueError, match="'hinge' is not one of"):
        build_loss("hinge")
    with pytest.raises(ValueError, match="not one of"):
        loader_targets("hinge")
