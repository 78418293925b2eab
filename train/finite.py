"""The run stops rather than save garbage: a non-finite loss or gradient norm stops it naming the step, and no
checkpoint is written of weights that are not all finite.

The loss and gradient norm of every step stay on the device and are checked once per log window (the window's
one CPU-GPU sync, which every checkpoint closes first); the weights are checked once per checkpoint.
"""

from __future__ import annotations

import math

import torch

ADVICE = "lower optim.base_lr or lengthen the warm-up, and continue from an earlier checkpoint with --resume PATH"


def gradient_norm(model: torch.nn.Module) -> torch.Tensor:
    """The global L2 norm of the model's gradients, on the device (no sync)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads)


def check_window(losses: list[float], grad_norms: list[float], first_step: int) -> None:
    """FloatingPointError naming the first step of a window whose loss or gradient norm is not finite."""
    for i, (loss, norm) in enumerate(zip(losses, grad_norms)):
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss} at step {first_step + i}; {ADVICE}")
        if not math.isfinite(norm):
            raise FloatingPointError(
                f"the gradient norm became {norm} at step {first_step + i} (loss {loss:.4g}); {ADVICE}"
            )


def check_weights(model: torch.nn.Module, step: int) -> None:
    """FloatingPointError when a weight or buffer of the model is nan or inf: its checkpoint is not written."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    finite = torch.stack([torch.isfinite(t).all() for t in tensors]).all() if tensors else torch.tensor(True)
    if not bool(finite):  # one sync per checkpoint
        bad = next(name for name, t in model.state_dict().items() if t.is_floating_point() and not t.isfinite().all())
        raise FloatingPointError(
            f"the weights are not finite at step {step} ({bad} holds nan or inf): no checkpoint written; {ADVICE}"
        )
