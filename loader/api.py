"""build_loader: a rank's loader from a LoaderConfig. Imports no DALI at module level: the DALI pipeline
is imported when build_loader is called."""

from __future__ import annotations

from tagstream.loader.batch import Loader
from tagstream.loader.config import LoaderConfig


def build_loader(config: LoaderConfig, rank: int = 0, world: int = 1) -> Loader:
    """The loader of one rank: a DALI pipeline over this rank's epoch plan (imports DALI now, not before).

    On GPU (config.device == "gpu", config.device_id = local rank) the DALI workers are spawned, not
    forked, so building the loader before or after CUDA is initialised are both safe.
    """
    from tagstream.loader.iterator import DaliLoader

    return DaliLoader(config, rank=rank, world=world)
