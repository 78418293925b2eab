"""Conversion inputs: one InputKind per kind of collection (ImageFolder trees, JSON lines, CSV/TSV and Parquet
tables, WebDataset/img2dataset tars, YFCC100M's metadata, Hugging Face hub folders and save_to_disk folders), each with its options as one frozen dataclass, named
in one registry; Source is SRC opened as its kind. Every file may be local or an fsspec URL (paths.py).

    from tagstream.tools.convert.inputs import Source, CsvOptions
    source = Source("table.csv", options=CsvOptions(tags_column="hashtags"))
    count, fingerprint = source.scan()
    for item in source.items(start=0): ...
"""

from tagstream.tools.convert.inputs.base import RAW_LIMIT, InputKind, Item, KindOptions
from tagstream.tools.convert.inputs.csv_tables import CsvInput, CsvOptions
from tagstream.tools.convert.inputs.hf_hub import HubInput, HubOptions
from tagstream.tools.convert.inputs.hf_saved import SavedInput, SavedOptions
from tagstream.tools.convert.inputs.image_folder import ImageFolderInput, ImageFolderOptions
from tagstream.tools.convert.inputs.json_lines import JsonLinesInput, JsonLinesOptions
from tagstream.tools.convert.inputs.parquet_tables import ParquetInput, ParquetOptions
from tagstream.tools.convert.inputs.registry import FORMATS, INPUT_KINDS, OPTION_NAMES, detect_format, kind_options
from tagstream.tools.convert.inputs.source import FINGERPRINT_SCHEME, Source
from tagstream.tools.convert.inputs.tar_shards import TarInput, TarOptions
from tagstream.tools.convert.inputs.yfcc import YfccInput, YfccOptions

__all__ = [
    "FINGERPRINT_SCHEME",
    "FORMATS",
    "HubInput",
    "HubOptions",
    "SavedInput",
    "SavedOptions",
    "INPUT_KINDS",
    "OPTION_NAMES",
    "RAW_LIMIT",
    "CsvInput",
    "CsvOptions",
    "ImageFolderInput",
    "ImageFolderOptions",
    "InputKind",
    "Item",
    "JsonLinesInput",
    "JsonLinesOptions",
    "KindOptions",
    "ParquetInput",
    "ParquetOptions",
    "Source",
    "TarInput",
    "TarOptions",
    "YfccInput",
    "YfccOptions",
    "detect_format",
    "kind_options",
]
