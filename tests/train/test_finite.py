"""A run refuses to save garbage (issue 25): a non-finite loss or gradient norm stops it naming the step, and weights
holding nan or inf are never checkpointed."""

from __future__ import annotations

import pytest
import torch

from tagstream.train import distributed as dd
from tagstream.train.finite import check_weights, check_window, gradient_norm
from tagstream.train.loop import Step, train_one_epoch
from tagstream.train.losses import build_loss
from tagstream.train.models import build_model
from tagstream.train.rundir import RunLog
from tests.helpers.train_fakes import NUM_CLASSES, fake_factory, fake_run_config


def test_a_gradient_that_is_nan_while_the_loss_is_finite_stops_the_run_at_its_step(tmp_path, one_torch_thread):
    config = fake_run_config(tmp_path, "run.steps=3")
    loader = fake_factory(_loader_config(config))
    loader.set_epoch(0)
    model = build_model("regnet_y_tiny", NUM_CLASSES, image_size=16)
    softmax = build_loss("softmax")

    def loss_fn(model, images, targets):  # the value is the true loss; d sqrt(u)/du at u = 0 is inf: gradients nan
        logits = model(images)
        return softmax(logits, targets) + torch.sqrt((logits - logits.detach()).abs().sum())

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    dist = dd.setup("cpu")
    log = RunLog(tmp_path, config, dist=dist, total_steps=3, start_step=0, images_per_step=16)
    seen = []

    def after_step(step, loss, grad_norm, wait, lr):
        seen.append((float(loss), float(grad_norm)))
        log.step(step, loss, grad_norm, wait, lr=lr, epoch=0, flush=step == 2)

    run = Step(config, torch.device("cpu"))
    with pytest.raises(FloatingPointError, match=r"^the gradient norm became nan at step 1 \(loss [0-9.]+\)"):
        train_one_epoch(
            model,
            optimizer,
            scheduler,
            loader,
            loss_fn,
            run=run,
            step=0,
            stop=3,
            steps_per_epoch=3,
            after_step=after_step,
        )
    log.close()
    (loss, norm), _ = seen  # step 1: a finite loss, a nan gradient; step 2 ran on the nan weights
    assert loss == loss and norm != norm


def test_the_window_check_names_the_first_bad_step():
    check_window([1.0, 2.0], [3.0, 4.0], 7)
    with pytest.raises(FloatingPointError, match="the loss became inf at step 8"):
        check_window([1.0, float("inf"), float("nan")], [1.0, 1.0, 1.0], 7)
    with pytest.raises(FloatingPointError, match="the gradient norm became nan at step 9"):
        check_window([1.0, 1.0, 1.0], [1.0, 1.0, float("nan")], 7)


def test_weights_with_a_nan_are_not_checkpointed(tmp_path):
    model = build_model("regnet_y_tiny", NUM_CLASSES, image_size=16)
    check_weights(model, 5)
    assert float(gradient_norm(model)) == 0.0  # no gradients yet
    name, param = next(iter(model.named_parameters()))
    with torch.no_grad():
        param.view(-1)[3] = float("nan")
    with pytest.raises(FloatingPointError, match=rf"not finite at step 5 \({name} holds nan or inf\): no checkpoint"):
        check_weights(model, 5)


def _loader_config(config):
    from tagstream.train.loading import loader_config

    return loader_config(config, mode="train", batch_size=16, device="cpu", device_id=0)
