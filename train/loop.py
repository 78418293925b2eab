"""The training loop — train_one_epoch, evaluate, main(config) — readable top to bottom, one process or torchrun.

One process (CPU or one GPU):
    tagstream train --config tiny-cpu --dataset DS --vocab v1 --out runs/tiny
One machine, 8 GPUs:
    torchrun --standalone --nproc_per_node 8 -m tagstream.tools.cli train --config resnet50 \
        --dataset DS --vocab v1 --out runs/r50
Several machines (run on each; HOST = the first machine's address):
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 --rdzv_id r50 \
        -m tagstream.tools.cli train --config resnet50 --dataset DS --vocab v1 --out runs/r50
Continue after a crash or preemption: the same command plus --resume.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from tagstream.loader import build_loader
from tagstream.train import checkpoint as ckpt
from tagstream.train import distributed as dd
from tagstream.train.config import TrainConfig
from tagstream.train.ema import build_ema
from tagstream.train.finite import check_weights, gradient_norm
from tagstream.train.heldout import evaluate
from tagstream.train.init import apply_init, read_init
from tagstream.train.loading import loader_config, run_partitions
from tagstream.train.losses import build_loss
from tagstream.train.mae import MaskKeys, build_mae, evaluate_mae
from tagstream.train.metrics import COUNT_KEYS
from tagstream.train.models import build_model
from tagstream.train.optim import build_optimizer, clip_gradients
from tagstream.train.resume import check_resume, fresh_hyperparameters, reapply_hyperparameters
from tagstream.train.rundir import RunLock, RunLog, check_out_dir, init_out_dir
from tagstream.train.schedule import build_scheduler
from tagstream.train.step import Step


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loader: Any,
    loss_fn: Callable,
    *,
    run: Step,
    step: int,
    stop: int,
    steps_per_epoch: int,
    after_step: Callable[[int, torch.Tensor, torch.Tensor, float, float], None],
    ema: Any = None,
) -> int:
    """Optimizer steps from `step` until the epoch's steps_per_epoch or `stop`; returns the step reached.

    The loader continues from its own state (0 after set_epoch, mid-epoch after load_state_dict).
    loss_fn(model, images, targets) -> the batch's loss.
    after_step(step, loss, grad_norm, data_wait_s, lr) is called after every optimizer step, loss and gradient norm
    still on the device (train/finite.py checks them once per log window).
    """
    model.train()
    accum = run.grad_accum
    where = loader.state_dict()
    epoch, done = where["epoch"], where["step"] // accum  # steps of this epoch already taken (resume)
    if done >= steps_per_epoch or step >= stop:
        return step
    batches = iter(loader)  # only now: iterating an exhausted loader would restart the epoch
    while done < steps_per_epoch and step < stop:
        loss_sum = torch.zeros((), device=run.device)
        wait = 0.0
        for micro in range(accum):
            t0 = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - t0
            images, targets = run.inputs(batch, (epoch, done * accum + micro))
            # under DDP, all-reduce gradients only on the last micro-batch of the accumulation
            sync = model.no_sync() if isinstance(model, DDP) and micro < accum - 1 else nullcontext()
            with sync:
                with run.autocast:
                    loss = loss_fn(model, images, targets) / accum
                loss.backward()
            loss_sum += loss.detach()  # stays on the device: no CPU-GPU sync per step
        # after DDP's all-reduce: every rank clips the same gradients and sees the same norm
        grad_norm = clip_gradients(model, run.grad_clip)
        if grad_norm is None:
            grad_norm = gradient_norm(model)
        lr = optimizer.param_groups[0]["lr"]  # the LR this step used (scheduler.step() sets the next one)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update_parameters(model.module if isinstance(model, DDP) else model)
        scheduler.step()
        step += 1
        done += 1
        after_step(step, loss_sum, grad_norm, wait, lr)
    return step


def _rng_state(cuda: bool) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if cuda else []}


def main(
    config: TrainConfig,
    *,
    resume: str | None = None,
    resume_anyway: Sequence[str] = (),
    loader_factory: Callable[..., Any] = build_loader,
) -> dict[str, Any]:
    """Train as configured; resume=None (fresh), "auto" (latest intact checkpoint in out_dir, if any) or a path;
    resume_anyway: config keys a resumed run may change beyond train.resume.MAY_CHANGE.

    Returns the run's summary (also the last line of out_dir/metrics.jsonl on rank 0). Process-wide
    torch settings it changes (threads, deterministic algorithms) are restored on return. Rank 0 holds
    the run directory's lock for the whole run.
    """
    rank = dd.env_ranks()[0]
    with RunLock(config.run.out_dir) if rank == 0 else nullcontext():
        return _main(config, resume=resume, resume_anyway=resume_anyway, loader_factory=loader_factory)


def _main(
    config: TrainConfig, *, resume: str | None, resume_anyway: Sequence[str], loader_factory: Callable[..., Any]
) -> dict[str, Any]:
    # Refuse bad set-ups before anything expensive: batch split, device, out_dir holding another run.
    rank, world, local_rank = dd.env_ranks()
    if not config.data.vocab:
        raise ValueError(
            "data.vocab is required: the loader draws through a vocabulary (for model.objective='mae' "
            "`tagstream train` builds the one-class vocabulary 'images' when none is given)"
        )
    device_kind = dd.resolve_device(config.run.device)
    out = Path(config.run.out_dir)
    warn = (lambda msg: print(msg, file=sys.stderr)) if rank == 0 else (lambda msg: None)
    resume_path, state = ckpt.load_resumable(out, resume, warn=warn)
    if resume == "auto" and state is None:  # a job script that always passes --resume: its first run starts here
        warn(f"--resume: no checkpoint in {out} yet; starting the run from step 0")
    if state is not None:
        check_resume(state["config"], config, path=resume_path, allow=resume_anyway)
    partitions = run_partitions(config, state, world, path=resume_path)
    # --init: read and checked before anything expensive; a resumed run has its own weights
    init = read_init(config.model.init, model_name=config.model.name) if config.model.init and state is None else None
    per_rank = config.batch.per_rank(world)
    if rank == 0:
        check_out_dir(out, config, resuming=state is not None)

    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(config.run.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    if config.run.threads is not None:
        torch.set_num_threads(config.run.threads)
    if device_kind == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)  # with a fixed thread count: bit-exact resume
    loaders: list[Any] = []
    try:
        # Loaders first: their worker processes must not inherit an initialised CUDA context or process group.
        for mode in ("train", "eval") if config.data.holdout_fraction > 0 else ("train",):
            lc = loader_config(
                config,
                mode=mode,
                batch_size=per_rank,
                device=device_kind,
                device_id=local_rank,
                partitions=partitions if mode == "train" else None,
            )
            loaders.append(loader_factory(lc, rank, world))
        dist = dd.setup(device_kind)
        return _train(
            config,
            loaders[0],
            loaders[1] if len(loaders) > 1 else None,
            dist=dist,
            state=state,
            resume_path=resume_path,
            per_rank=per_rank,
            init=init,
        )
    finally:
        for loader in loaders:
            loader.close()
        dd.teardown()
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])


def _train(
    config: TrainConfig,
    train_loader: Any,
    eval_loader: Any | None,
    *,
    dist: dd.Dist,
    state: dict | None,
    resume_path: Path | None,
    per_rank: int,
    init: dict | None,
) -> dict[str, Any]:
    """main's body once the loaders and the process group exist."""
    out = Path(config.run.out_dir)
    mae = config.model.objective == "mae"
    num_classes = int(train_loader.num_classes)
    steps_per_epoch = len(train_loader) // config.batch.grad_accum
    if steps_per_epoch < 1:
        raise ValueError(
            f"an epoch has {len(train_loader)} batches per rank, fewer than batch.grad_accum={config.batch.grad_accum}; "
            "lower batch.global_size or grad_accum, or raise data.samples_per_epoch"
        )
    total_steps = config.run.steps or config.run.epochs * steps_per_epoch

    if state is not None:
        ckpt.check_compatible(state, model_name=config.model.name, num_classes=num_classes, path=resume_path)

    size = config.data.final_image_size
    model = (
        build_mae(config.model, image_size=size)
        if mae
        else build_model(config.model.name, num_classes, image_size=size)
    )
    init_info = {}
    if init is not None:
        backbone = model.encoder if mae else model
        init_info = apply_init(backbone, init, path=config.model.init, model_name=config.model.name, image_size=size)
    model = model.to(dist.device)
    if dist.is_main:
        init_out_dir(out, config, resume_step=None if state is None else int(state["step"]))
    keys = (
        MaskKeys(
            seed=config.run.seed,
            ratio=config.model.mask_ratio,
            patches=model.patches,
            rank=dist.rank,
            per_rank=per_rank,
        )
        if mae
        else None
    )
    run = Step(config, dist.device, keys)
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config.optim, lr=config.lr)
    scheduler = build_scheduler(optimizer, config.schedule, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    step = 0
    if state is not None:
        try:  # a checkpoint that loads safely can still be malformed: wrong shapes, missing keys
            fresh = fresh_hyperparameters(optimizer)
            # torch checks shapes, not types: a string where the scheduler keeps a count failed steps later
            ckpt.check_like(state["optimizer"]["param_groups"], optimizer.state_dict()["param_groups"], "optimizer")
            ckpt.check_like(state["schedule"], scheduler.state_dict(), "schedule")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["schedule"])
            reapply_hyperparameters(optimizer, scheduler, fresh)
            torch.set_rng_state(state["rng"]["torch"])
            ema = build_ema(model, config.optim.ema)
            if ema is not None and "ema" in state:
                ema.load_state_dict(state["ema"])
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{resume_path}: checkpoint does not fit this run ({first})") from None
        try:
            train_loader.load_state_dict(state["loader"])  # the exact next batch of the interrupted run
        except ValueError as exc:
            raise ValueError(
                f"{resume_path}: cannot continue its sample stream ({exc}); resume with the same global batch size, "
                "grad_accum and seed, on a world size dividing the run's data.partitions"
            ) from None
        if dist.device.type == "cuda" and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        step = int(state["step"])
    else:
        train_loader.set_epoch(0)
        ema = build_ema(model, config.optim.ema)
    start_step = step
    bare = model
    if dist.enabled:
        model = DDP(model, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)
    if mae:
        loss_fn: Callable = lambda net, images, masks: net(images, masks)  # noqa: E731 - the MAE's forward is its loss
    else:
        classify = build_loss(config.model.loss, label_smoothing=config.model.label_smoothing)
        loss_fn = lambda net, images, targets: classify(net(images), targets)  # noqa: E731
    softmax = config.model.loss == "softmax"

    def held_out(net: torch.nn.Module) -> dict[str, float]:
        if keys is not None:
            return evaluate_mae(net, eval_loader, run=run, keys=keys, dist=dist)
        return evaluate(net, eval_loader, run=run, softmax=softmax, dist=dist)

    log = RunLog(
        out, config, dist=dist, total_steps=total_steps, start_step=step, images_per_step=config.batch.global_size
    )
    log.event(
        "start",
        step=step,
        world=dist.world,
        per_rank_batch=per_rank,
        lr=config.lr,
        num_classes=num_classes,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        resumed_from=str(resume_path or ""),
        objective=config.model.objective,
        **({"init_from": init_info} if init_info else {}),
    )
    eval_results: dict[str, float] = {}

    def save(step: int) -> None:
        check_weights(bare, step)  # on every rank (the weights are the same), so none waits at the barrier alone
        if dist.is_main:
            ckpt.save_checkpoint(
                {
                    "model": bare.state_dict(),
                    "model_name": config.model.name,
                    "num_classes": num_classes,
                    "optimizer": optimizer.state_dict(),
                    "schedule": scheduler.state_dict(),
                    "step": step,
                    "loader": train_loader.state_dict(),
                    "config": config.to_dict(),
                    "rng": _rng_state(dist.device.type == "cuda"),
                    "world": dist.world,
                    **({"ema": ema.state_dict()} if ema is not None else {}),
                },
                out,
                keep_last=config.run.keep_last,
            )
        dd.barrier(dist)  # nobody runs ahead of a checkpoint that may be resumed

    def evaluate_all(step: int) -> dict[str, float]:
        """The held-out metrics of the weights, and with optim.ema of their average too (keys ema_*)."""
        results = held_out(bare)
        if ema is not None:
            averaged = held_out(ema.module)
            results.update({f"ema_{k}": v for k, v in averaged.items() if k not in COUNT_KEYS})  # the same images
        log.event("eval", step=step, **results)
        return results

    def after_step(step: int, loss: torch.Tensor, grad_norm: torch.Tensor, wait: float, lr: float) -> None:
        nonlocal eval_results
        r = config.run
        boundary = step == total_steps or (r.checkpoint_every and step % r.checkpoint_every == 0)
        log.step(
            step,
            loss,
            grad_norm,
            wait,
            lr=lr,
            epoch=train_loader.state_dict()["epoch"],
            flush=boundary or step % r.log_every == 0,
        )
        if r.checkpoint_every and step % r.checkpoint_every == 0 and step < total_steps:
            save(step)
        if eval_loader is not None and r.eval_every and step % r.eval_every == 0 and step < total_steps:
            eval_results = evaluate_all(step)

    try:
        epoch = train_loader.state_dict()["epoch"]
        while step < total_steps:
            step = train_one_epoch(
                model,
                optimizer,
                scheduler,
                train_loader,
                loss_fn,
                run=run,
                step=step,
                stop=total_steps,
                steps_per_epoch=steps_per_epoch,
                after_step=after_step,
                ema=ema,
            )
            if step < total_steps:
                epoch += 1
                train_loader.set_epoch(epoch)  # the next epoch's plan: a new draw, identical on every rank
        save(step)
        if eval_loader is not None:
            eval_results = evaluate_all(step)
        latest = ckpt.latest_checkpoint(out) if dist.is_main else None
        return log.summary(step=step, steps_run=step - start_step, checkpoint=str(latest or ""), eval=eval_results)
    finally:
        log.close()
