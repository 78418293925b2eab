"""De-duplication: mask the training images that are near copies of evaluation images (a mask; nothing is deleted).

    from tagstream.tools.dedup import run_dedup
"""

from tagstream.tools.dedup.run import run_dedup

__all__ = ["run_dedup"]
