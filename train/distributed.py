"""torch.distributed set-up and tear-down for one process or torchrun (env://): NCCL on GPU, gloo on CPU.

Single-process runs never initialise a process group, so they need no rendezvous and no free port.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def resolve_device(requested: str) -> str:
    """ "auto" -> "cuda" when a GPU is visible, else "cpu"; "cuda" without a GPU is an error."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("run.device='cuda' but no CUDA GPU is visible; use run.device='cpu' or 'auto'")
    if requested not in ("cpu", "cuda"):
        raise ValueError(f"device {requested!r} is not one of ('auto', 'cpu', 'cuda')")
    return requested


def env_ranks() -> tuple[int, int, int]:
    """(rank, world, local_rank) from torchrun's environment; (0, 1, 0) when not launched by it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must be in [0, WORLD_SIZE={world})")
    return rank, world, local_rank


def setup(device: str, *, timeout_s: float = 1800.0) -> Dist:
    """Join the process group when under torchrun; pin this rank's GPU. Call after building the loader
    (DALI workers must not inherit CUDA state) and before touching the model."""
    rank, world, local_rank = env_ranks()
    kind = resolve_device(device)
    dev = torch.device("cuda", local_rank) if kind == "cuda" else torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if kind == "cuda" else "gloo",
            init_method="env://",
            timeout=timedelta(seconds=timeout_s),
            **({"device_id": dev} if kind == "cuda" else {}),
        )
    return Dist(rank=rank, world=world, local_rank=local_rank, device=dev)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """Mean of a tensor over ranks (a sync point: every rank must call it)."""
    if d.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= d.world
    return value


def gather_objects(obj: object, d: Dist) -> list[object] | None:
    """Every rank's obj on rank 0, in rank order; None on the other ranks (pickled; for evaluation results)."""
    if not d.enabled:
        return [obj]
    out: list[object] | None = [None] * d.world if d.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
