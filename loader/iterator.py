"""DaliLoader: the PyTorch-facing iterator of one rank over a DALI pipeline, with epochs, exact resume
and targets built in the main process from the batch's indices; the pipeline is rebuilt (workers
restarted, a cost of seconds: docs/costs.md) only when the requested (epoch, step) is not where the running pipeline stands."""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, Iterator

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.batch import IMAGENET_MEAN, IMAGENET_STD, Batch
from tagstream.loader.config import LoaderConfig
from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.prefetch import start_prefetch
from tagstream.loader.data.retries import Retry
from tagstream.loader.data.storage import StorageError
from tagstream.loader.data.store import ShardStore, check_shard_files
from tagstream.loader.data.vocab import Vocab
from tagstream.loader.pipeline.batch_source import BatchSource
from tagstream.loader.pipeline.decode_source import DecodedBatchSource
from tagstream.loader.pipeline.graph import GPU_MAX_PIXELS, build_pipeline, start, stop, worker_processes
from tagstream.loader.pipeline.lifetime import WorkerDied, WorkerWatch, exit_description
from tagstream.loader.pipeline.source import DecodeSource, EvalPlan, SourceSettings, source_decodes
from tagstream.loader.sampling.partitions import working_worlds

STATE_KEYS = (
    "epoch",
    "step",
    "mode",
    "seed",
    "batch_size",
    "rank",
    "world",
    "batches",
    "partitions",
    "global_batch",
    "one_pass",
)


class DaliLoader:
    """Yields Batch(images, targets, indices) for one rank; see loader/batch.py (Loader) for the contract.

    train: `len(self)` = samples_per_epoch // partitions // (batch_size * world / partitions) batches on
    every rank (samples_per_epoch // world // batch_size with one partition per rank), drawn by the rank's
    sampler plan; with one_pass, ceil(eligible images / global batch) batches (drop_last: floor), every image
    once an epoch over all ranks (loader/sampling/sampler.py); eval: each rank takes a contiguous share of the eligible images in dataset
    order, the pipeline pads to whole batches and the iterator drops the padding, so the last batch
    of a rank may be short (rarely empty) while every rank yields the same number of batches.
    """

    def __init__(self, config: LoaderConfig, rank: int = 0, world: int = 1):
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank={rank} must be in [0, world={world})")
        self.config = config
        self.rank, self.world = int(rank), int(world)
        self.retry = Retry.within(config.storage_timeout)  # one bound on what a stalled server costs
        self.dataset = Dataset(
            config.dataset, cache_dir=config.cache_dir, verify=config.verify_shards, retry=self.retry
        )
        self.vocab = Vocab(self.dataset, config.vocab)
        self.num_classes = self.vocab.num_classes
        self.normalized = config.device == "gpu"
        self.store = ShardStore(self.dataset, verify=config.verify_shards, cache_dir=config.cache_dir)
        self.train = config.mode == "train"
        # the decode placement, chosen once (the CPU decoder in the source's workers, or DALI's decoder)
        self.decodes = source_decodes(config.device, config.cpu_decoder)
        b = config.batch_size
        if self.train:
            from tagstream.loader.sampling.sampler import RankSampler

            self.sampler = RankSampler.from_config(config, self.dataset, self.vocab, rank=self.rank, world=self.world)
            self.batches = int(self.sampler.len_per_rank) // b
            if self.batches == 0:
                raise ValueError(
                    f"batch_size={b} is larger than this rank's {self.sampler.len_per_rank} samples per epoch "
                    f"(world={world}); lower batch_size or raise samples_per_epoch"
                )
            self._plan: Any = self.sampler
        else:
            from tagstream.loader.sampling.eligible import Eligibility, eval_share_of, thin_eval_share

            rule = Eligibility(masks=tuple(config.masks), holdout_fraction=config.holdout_fraction, split=config.split)
            share, eligible = eval_share_of(self.dataset, rule, self.rank, world)
            if eligible == 0:
                raise ValueError(
                    f"no image to evaluate: split={config.split!r}, masks={config.masks} leave none of {len(self.dataset)}"
                )
            # eval_max_images: that many eligible images, evenly spread, the same ones on any world size
            share, largest = thin_eval_share(share, eligible, self.rank, world, config.eval_max_images)
            self.batches = max(1, math.ceil(largest / b))
            self._plan = EvalPlan(share, self.batches * b)
        self.epoch = 0
        self.step = 0
        self._pipe: Any = None
        self._pipe_at: tuple[int, int] | None = None  # (epoch, step) the running pipeline delivers next
        self._pipe_size: int | None = None  # the image size the running pipeline produces
        self.source: DecodeSource | None = None  # what feeds the running pipeline (None before the first)
        self._watch: WorkerWatch | None = None  # which of the running pipeline's workers ended first
        # a remote dataset: this rank's shards download in the background, first-read first (loader/data/prefetch.py)
        self._fetch = start_prefetch(
            self.dataset,
            self._plan,
            length=self.batches * b,
            limit=config.cache_limit,
            owned_ranges=self.sampler.owned_ranges() if self.train else None,
        )

    # -- the Loader protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return self.batches

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch={epoch} must be >= 0")
        self.epoch, self.step = int(epoch), 0

    def state_dict(self) -> dict:
        """Where the sample stream stands: (epoch, step) of the global batch sequence, and the layout it
        is a function of (seed, partitions, global batch); rank, world and batch_size are this loader's."""
        c = self.config
        return {
            "epoch": self.epoch,
            "step": self.step,
            "mode": c.mode,
            "seed": c.seed,
            "batch_size": c.batch_size,
            "rank": self.rank,
            "world": self.world,
            "batches": self.batches,
            "partitions": self.sampler.partitions if self.train else None,
            "global_batch": c.batch_size * self.world,
            "one_pass": c.one_pass and self.train,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from state["epoch"], state["step"]; refuses a state from another seed, partition count or
        global batch. Another world size is fine when it divides the partitions (the same global batches)."""
        missing = [k for k in ("epoch", "step") if k not in state]
        if missing:
            raise ValueError(f"loader state lacks {missing}; expected keys {STATE_KEYS}")
        mine = self.state_dict()
        state = dict(state)
        if "world" in state and "batch_size" in state:  # a state written before partitions: one per rank
            state.setdefault("partitions", state["world"] if state.get("mode", "train") == "train" else None)
            state.setdefault("global_batch", state["batch_size"] * state["world"])
        state.setdefault("one_pass", False)  # a state written before one-pass epochs
        for key in ("mode", "seed", "partitions", "global_batch", "batches", "one_pass"):
            if key in state and state[key] != mine[key]:
                hint = ""
                if key == "global_batch":
                    hint = f" (batch_size={self.config.batch_size} x world={self.world})"
                if key == "partitions" and state[key]:
                    hint = f": build the loader with partitions={state[key]} on a world size dividing it ({', '.join(map(str, working_worlds(state[key])))})"
                raise ValueError(f"loader state has {key}={state[key]!r} but this loader has {key}={mine[key]!r}{hint}")
        step = int(state["step"])
        if not 0 <= step <= self.batches:
            raise ValueError(f"loader state step={step} is outside [0, {self.batches}]")
        self.epoch, self.step = int(state["epoch"]), step

    def __iter__(self) -> Iterator[Batch]:
        import torch

        if self.step >= self.batches:  # re-iterating without set_epoch repeats the epoch, like torch's samplers
            self.step = 0
        self._ensure_pipeline()
        while self.step < self.batches:
            images, indices = self._run()
            self.step += 1
            self._pipe_at = (self.epoch, self.step)
            if not self.train:
                keep = indices >= 0
                if not keep.all():
                    images, indices = images[torch.from_numpy(keep).to(images.device)], indices[keep]
            yield Batch(images, self._targets(indices), torch.from_numpy(indices))
        self._finish_epoch()

    def close(self) -> None:
        self._stop_pipeline()
        self.store.close()

    def _stop_pipeline(self, *, broken: bool = False) -> None:
        """Stop the running pipeline; `broken`: one of its workers died (graph.stop waits on nothing it held)."""
        if self._pipe is not None:
            stop(self._pipe, broken=broken or bool(self._watch is not None and self._watch.first_ended(0)))
            if self._watch is not None:
                self._watch.close()
                self._watch = None
            self._pipe = None
            self._pipe_at = None
            self.source = None  # a batch source holds its last batches' read transactions

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: DALI may already be gone; nothing left to release
            pass

    # -- internals -------------------------------------------------------------------------------
    def _finish_epoch(self) -> None:
        """After an epoch's last batch, the pipeline stands at the next epoch's start: a continuous train stream goes on
        into it by itself (BatchPlan); otherwise consume the pipeline's StopIteration and reset it (DALI's
        epoch_idx + 1, which the sources map to our epoch + 1)."""
        if self._pipe is None or self._pipe_at is None or self._pipe_at[1] != self.batches:
            return
        if self.source is None or not self.source.continuous:  # a continuous stream has nothing to drain or reset
            try:
                self._pipe_run()
            except StopIteration:
                self._pipe.reset()
            else:
                raise RuntimeError("DALI pipeline delivered more batches than the epoch plan holds")
        self._pipe_at = (self._pipe_at[0] + 1, 0)
        if self._fetch is not None:  # the shards the next epoch reads first, first
            length = self.batches * self.config.batch_size
            self._fetch.follow(self._plan, epoch=self._pipe_at[0], position=0, length=length)

    def _ensure_pipeline(self) -> None:
        self._finish_epoch()
        c = self.config
        # progressive resizing: the size is a function of the epoch, so a new size means a new pipeline
        size = c.train_size(self.epoch) if self.train else c.image_size
        if self._pipe is not None and self._pipe_at == (self.epoch, self.step) and self._pipe_size == size:
            return
        self.close()
        if self._fetch is not None:
            self._fetch.follow(
                self._plan, epoch=self.epoch, position=self.step * c.batch_size, length=self.batches * c.batch_size
            )
        decodes = self.decodes
        settings = SourceSettings(
            store=ShardStore(
                self.dataset.root, verify=self.config.verify_shards, cache_dir=self.config.cache_dir, retry=self.retry
            ),
            plan=self._plan,
            train=self.train,
            length=self.batches * c.batch_size,
            seed=c.seed,
            rank=self.rank,
            # the partitions this rank serves key the crops and flips, so they survive a change of world size
            serves=self.sampler.partitions // self.world if self.train else 1,
            share=self.sampler.share if self.train else None,
            base_epoch=self.epoch,
            base_position=self.step * c.batch_size,
            scale=c.random_area,
            ratio=c.random_aspect_ratio,
            image_size=size,
            resize_size=c.resize_size,  # None: the sources' default, image_size * 256 / 224
            content_box=c.eval_content_box,
        )
        source: DecodeSource
        if decodes:  # CPU: worker processes decode the windows of whole batches (loader/pipeline/decode_source.py)
            source = DecodedBatchSource(
                settings,
                batch_size=c.batch_size,
                antialias=c.antialias,
                dct_scaling=c.dct_scaling,
                continuous=self.train,
            )
        else:  # DALI decodes: whole batches handed over from this thread, no workers (loader/pipeline/batch_source.py)
            max_pixels = GPU_MAX_PIXELS if c.device == "gpu" else None
            source = BatchSource(
                settings, batch_size=c.batch_size, prefetch=c.prefetch, max_pixels=max_pixels, continuous=self.train
            )
        workers = c.workers if decodes else 0
        pipe = build_pipeline(
            source,
            batch_size=c.batch_size,
            image_size=size,
            device=c.device,
            device_id=c.device_id,
            workers=workers,
            threads=c.threads,
            prefetch=c.prefetch,
            seed=c.seed + self.rank,
            bytes_per_sample=3 * size**2,  # a decoded sample (the only parallel source)
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            antialias=c.antialias,
        )
        self._pipe = start(pipe, workers=workers)
        self._watch = WorkerWatch(worker_processes(self._pipe)) if workers > 0 else None
        self.source = source
        self._pipe_at = (self.epoch, self.step)
        self._pipe_size = size

    def _run(self) -> tuple[Any, NDArray[np.int64]]:
        import torch

        try:
            images, indices = self._pipe_run()
        except StopIteration:
            raise RuntimeError(f"DALI pipeline ended at step {self.step} of {self.batches}") from None
        idx = np.array(indices.as_tensor()).reshape(-1).astype(np.int64)
        if self.normalized:
            from nvidia.dali.plugin.pytorch import feed_ndarray

            tensor = images.as_tensor()
            out = torch.empty(tensor.shape(), dtype=torch.float32, device=f"cuda:{self.config.device_id or 0}")
            feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream(out.device))
            return out, idx
        # zero copy: the dynamic executor hands each batch fresh buffers that live as long as the tensor
        return torch.from_dlpack(images.as_tensor()), idx

    def _pipe_run(self) -> Any:
        """One run of the pipeline (StopIteration passes through); a failure closes it and raises what _failed names."""
        try:
            with self._watch.calling() if self._watch is not None else nullcontext():
                return self._pipe.run()
        except StopIteration:
            raise
        except Exception as exc:
            raise self._failed(exc) from exc
        except KeyboardInterrupt as exc:  # the watch interrupted a call blocked on a dead worker
            if self._watch is None or not self._watch.interrupted:
                raise
            raise self._failed(exc) from exc

    def _failed(self, exc: BaseException) -> Exception:
        """The error to raise for a pipeline failure, after closing the pipeline: a worker process that died (the
        pool's own error cannot say which, nor how), else what _diagnose finds."""
        ended = self._watch.first_ended() if self._watch is not None else []
        self._stop_pipeline(broken=bool(ended))  # every worker joined: how each one ended is known
        self.store.close()
        if not ended:
            return self._diagnose(exc)
        how = ", ".join(f"{p.pid} {exit_description(p.exitcode)}" for p in ended)
        return WorkerDied(
            f"loader worker process {how} at epoch {self.epoch}, step {self.step} of {self.batches}; the loader "
            "stopped its other workers (a SIGKILL nobody sent is most often the kernel's out-of-memory killer, see "
            "dmesg: lower workers or prefetch, then resume from the last checkpoint)"
        )

    def _diagnose(self, exc: Exception) -> Exception:
        """A pipeline failure: name the shard and key of the first undecodable image of the batches in
        flight (the decoder's own error cannot, and prefetch may have run a few batches ahead)."""
        from PIL import UnidentifiedImageError

        if isinstance(exc, fmt.FormatError):
            return exc  # the source's own error: it already names the shard and key
        if self._fetch is not None and self._fetch.error is not None:
            return self._fetch.error  # a remote shard that could not be fetched: the error names the object
        b = self.config.batch_size
        lo = self.step * b
        # the pipeline's queue, the parallel source's (at least one batch a worker) and the one being built
        hi = min(self.batches * b, lo + (2 * self.config.prefetch + self.config.workers + 2) * b)
        in_flight = self._plan.plan(self.epoch, lo, hi)
        shards, _ = self.dataset.locate(in_flight[in_flight >= 0])
        here = [
            k
            for k in sorted(set(shards.tolist()))
            if self.dataset.mirror is None or self.dataset.shard_path(k).exists()
        ]
        cut = check_shard_files(self.dataset, here)  # a shard truncated (or deleted) under a reader
        if cut is not None:
            return cut
        for index in in_flight:
            if index < 0:
                continue
            try:
                with fmt.open_image(self.store.read_image(int(index))) as im:  # a bomb header: never decoded
                    im.load()
            except StorageError as bad:
                return bad
            except Exception as bad:
                what = "no image format recognises the bytes" if isinstance(bad, UnidentifiedImageError) else bad
                return fmt.FormatError(f"{self.dataset.root}: {self.store.where(int(index))}: cannot decode: {what}")
        return exc

    def _targets(self, indices: NDArray[np.int64]) -> Any:
        import torch

        from tagstream.kernels import targets as tk

        offsets, labels = self.vocab.label_offsets, self.vocab.labels
        n = indices.shape[0]
        if self.config.targets == "sparse":
            k = self.config.max_labels
            ids = np.full((n, k), -1, np.int64)
            w = np.zeros((n, k), np.float32)
            tk.sparse_targets(offsets, labels, indices, ids, w)
            return torch.from_numpy(ids), torch.from_numpy(w)
        out = np.zeros((n, self.num_classes), np.float32)
        (tk.soft_targets if self.config.targets == "soft" else tk.multi_hot)(offsets, labels, indices, out)
        return torch.from_numpy(out)
