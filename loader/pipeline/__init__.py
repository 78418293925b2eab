"""The pipeline wing: from plan positions to pixels — the decode sources (the per-sample source that decodes with the
CPU decoder in worker processes, the batch source that hands whole batches to DALI), the DALI graphs (graph.py: the
GPU decode graph and the CPU one), crop windows, the CPU decoder (turbo.py over _jpeg.c) and progressive resizing.

Code outside loader/ imports these names, or the `turbo` namespace, from here.
"""

from tagstream.loader.pipeline import turbo
from tagstream.loader.pipeline.lifetime import WorkerDied, exit_with_parent
from tagstream.loader.pipeline.sizes import (
    MAX_EPOCH,
    MAX_SIZE,
    MIN_SIZE,
    check_size,
    final_size,
    format_size_schedule,
    image_size_setting,
    parse_size_schedule,
)

__all__ = [
    "MAX_EPOCH",
    "MAX_SIZE",
    "MIN_SIZE",
    "WorkerDied",
    "check_size",
    "exit_with_parent",
    "final_size",
    "format_size_schedule",
    "image_size_setting",
    "parse_size_schedule",
    "turbo",
]
