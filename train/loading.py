"""The one place a train config becomes loader settings: the train and held-out splits' `LoaderConfig`, and the
run's sample-stream partitions (kept across resumes)."""

from __future__ import annotations

from pathlib import Path

from tagstream.loader import LoaderConfig
from tagstream.loader.sampling import working_worlds
from tagstream.train.config import TrainConfig
from tagstream.train.losses import loader_targets


def loader_config(
    config: TrainConfig, *, mode: str, batch_size: int, device: str, device_id: int, partitions: int | None = None
) -> LoaderConfig:
    """The loader settings of the train split (resampled or one pass, augmented) or the held-out split (every image
    once, in order: one_pass does not change it)."""
    d = config.data
    holdout = d.holdout_fraction > 0
    return LoaderConfig(
        dataset=d.dataset,
        vocab=d.vocab,
        mode=mode,
        split=("train" if mode == "train" else "holdout") if holdout else "all",
        holdout_fraction=d.holdout_fraction,
        eval_max_images=d.holdout_max_images if mode == "eval" else 0,
        sampling=d.sampling,
        combine=d.combine,
        masks=d.masks,
        seed=config.run.seed,
        batch_size=batch_size,
        samples_per_epoch=d.samples_per_epoch,
        one_pass=d.one_pass,
        drop_last=d.drop_last,
        partitions=partitions,
        image_size=d.final_image_size,
        size_schedule=d.size_schedule if mode == "train" and len(d.size_schedule) > 1 else (),
        targets=loader_targets(config.model.loss),
        device="gpu" if device == "cuda" else "cpu",
        device_id=device_id if device == "cuda" else None,
        workers=d.workers,
        threads=d.threads,
        prefetch=d.prefetch,
        cpu_decoder=d.cpu_decoder,
        antialias=d.antialias,
        dct_scaling=d.dct_scaling,
        cache_dir=d.cache_dir or None,
        cache_limit=d.cache_limit,
        verify_shards=d.verify_shards,
        storage_timeout=d.storage_timeout,
    )


def run_partitions(config: TrainConfig, state: dict | None, world: int, *, path: Path | None = None) -> int:
    """The run's sample-stream partitions: data.partitions, else the checkpoint's (a resumed run keeps the
    count it started with; a checkpoint from before partitions had one per rank), else this world size.
    Refuses a world size that does not divide it, naming those that do."""
    saved = None
    if state is not None:
        loader = state.get("loader", {})
        saved = loader.get("partitions") or state.get("world") or loader.get("world")
    partitions = config.data.partitions or saved or world
    if saved and partitions != saved:
        raise ValueError(f"{path}: the run has data.partitions={saved}; it cannot continue with {partitions}")
    if partitions % world:
        ways = ", ".join(map(str, working_worlds(partitions)))
        started = f"{path}: the run" if state is not None else "this run"
        raise ValueError(
            f"{started} has data.partitions={partitions}: it runs on world sizes {ways}, not on {world} ranks"
        )
    return partitions
