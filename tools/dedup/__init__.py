"""De-duplication: mask the training images that are near copies of evaluation images (a mask; nothing is
deleted), by perceptual hash, by embedding (faiss kNN join) or both, with a contamination report.

    from tagstream.tools.dedup import run_dedup, EmbedMethod
"""

from tagstream.tools.dedup.features import EmbedMethod, EmbedOptions
from tagstream.tools.dedup.run import run_dedup

__all__ = ["EmbedMethod", "EmbedOptions", "run_dedup"]
