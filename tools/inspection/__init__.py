"""`tagstream inspect`: what a dataset holds (sizes, tags, rejects, masks) and how a vocabulary will be sampled.

from tagstream.tools.inspection import inspect_dataset
"""

from tagstream.tools.inspection.report import format_report, inspect_dataset

__all__ = ["format_report", "inspect_dataset"]
