"""Reading: the dataset format (reader and writer), LMDB shard store, vocabularies, sampling, DALI pipelines,
the CPU decoder and the PyTorch-facing iterator. What a user of the loader types:

    from tagstream.loader import build_loader, LoaderConfig, Dataset

Nothing here imports DALI or torch until a loader is built.
"""

from importlib.metadata import PackageNotFoundError, version

from tagstream.loader.api import build_loader
from tagstream.loader.batch import IMAGENET_MEAN, IMAGENET_STD, Batch, Loader, normalize_images
from tagstream.loader.config import LoaderConfig
from tagstream.loader.dataset import Dataset
from tagstream.loader.format import FormatError
from tagstream.loader.sampling import RankSampler, eligibility
from tagstream.loader.vocab import Vocab

try:
    __version__ = version("tagstream")  # the one definition is pyproject.toml's
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Batch",
    "Dataset",
    "FormatError",
    "Loader",
    "LoaderConfig",
    "RankSampler",
    "Vocab",
    "build_loader",
    "eligibility",
    "normalize_images",
    "__version__",
]
