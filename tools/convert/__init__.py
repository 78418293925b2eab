"""Conversion: image collections with hashtags -> a tagstream dataset (sources, image validation, shard writing, the resumable engine,
partitioned conversion and its merge, the Ray engine).

    from tagstream.tools.convert import convert, ImageOptions
    from tagstream.tools.convert import PartSpec, convert_part, merge, convert_on_ray   # on a cluster
"""

from tagstream.tools.convert.engine import ConvertRefused, ConvertSummary, convert
from tagstream.tools.convert.image import ImageOptions
from tagstream.tools.convert.merge import merge
from tagstream.tools.convert.parts import PartSpec, PartSummary, convert_part
from tagstream.tools.convert.ray_engine import PartsFailed, convert_on_ray

__all__ = [
    "ConvertRefused",
    "ConvertSummary",
    "ImageOptions",
    "PartSpec",
    "PartSummary",
    "PartsFailed",
    "convert",
    "convert_on_ray",
    "convert_part",
    "merge",
]
