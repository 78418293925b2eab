"""Conversion: image collections with hashtags -> a tagstream dataset (sources, image validation, shard writing, the resumable engine).

    from tagstream.tools.convert import convert, ImageOptions
"""

from tagstream.tools.convert.engine import ConvertRefused, ConvertSummary, convert
from tagstream.tools.convert.image import ImageOptions

__all__ = ["ConvertRefused", "ConvertSummary", "ImageOptions", "convert"]
