"""Reading, in three wings with a face each — data/ (the dataset on disk and in object storage), sampling/
(eligibility, weights, partitions, the per-rank sampler), pipeline/ (decode sources, DALI graphs, the CPU decoder) —
and the user-facing API on top (build_loader, LoaderConfig, the iterator, batches). What a user of the loader types:

    from tagstream.loader import build_loader, LoaderConfig, Dataset

Wings import one way: data <- sampling <- pipeline <- this API. Code outside loader/ imports this face or a wing's.
Nothing here imports DALI or torch until a loader is built.
"""

from tagstream.loader.api import build_loader
from tagstream.loader.batch import IMAGENET_MEAN, IMAGENET_STD, Batch, Loader, normalize_images
from tagstream.loader.config import MAX_PARTITIONS, MAX_SEED, MAX_THREADS, LoaderConfig, check_data_settings, check_int
from tagstream.loader.data import Dataset, FormatError, Vocab
from tagstream.loader.data.manifest import tool_version
from tagstream.loader.pipeline import WorkerDied
from tagstream.loader.progress import progress_bar
from tagstream.loader.sampling import RankSampler, eligibility

__version__ = tool_version()

__all__ = [
    "MAX_PARTITIONS",
    "MAX_SEED",
    "MAX_THREADS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Batch",
    "Dataset",
    "FormatError",
    "Loader",
    "LoaderConfig",
    "RankSampler",
    "Vocab",
    "WorkerDied",
    "build_loader",
    "check_data_settings",
    "check_int",
    "eligibility",
    "normalize_images",
    "progress_bar",
    "__version__",
]
