"""A Hugging Face dataset repository as the hub lays it out, as a conversion input: Parquet files whose names carry
their split (`data/train-00000-of-00042.parquet`, `data/test.parquet`, `default/train/0000.parquet`), local or an
`hf://datasets/OWNER/NAME` URL read through fsspec (huggingface_hub installed: pip install 'tagstream[hf]').

One split is converted (`split`, default train), its files in path order, each read as a Parquet table
(parquet_tables.py: the Image feature's struct, tags and captions, row groups streamed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tagstream.loader.data import storage
from tagstream.tools.convert.inputs.parquet_tables import PARQUET_SUFFIXES, ParquetInput, ParquetOptions
from tagstream.tools.convert.inputs.paths import expand

HUB_PREFIX = "hf://datasets/"


@dataclass(frozen=True)
class HubOptions(ParquetOptions):
    """A Parquet table's options, and the split to convert."""

    split: str = "train"  # the split whose files are converted (train, validation, test, ...)


def file_split(rel: str) -> str:
    """The split a file belongs to, from its path relative to the repository: its name up to the first '-'
    ('data/train-00000-of-00042.parquet' -> 'train'), or its folder's when the name is a bare number
    ('default/train/0000.parquet' -> 'train')."""
    parts = rel.split("/")
    stem = parts[-1][: -len(".parquet")] if parts[-1].lower().endswith(".parquet") else parts[-1]
    prefix = stem.split("-", 1)[0]
    return parts[-2] if prefix.isdigit() and len(parts) > 1 else prefix


class HubInput(ParquetInput):
    """A hub-style dataset folder or hf:// URL (see the module docstring)."""

    name = "hf-hub"
    title = "Hugging Face hub datasets"
    options_type = HubOptions
    takes = "folder"
    suffixes = ()

    def __init__(self, path, options: HubOptions):
        if not options.split:
            raise ValueError("--split must name a split (train, validation, test, ...)")
        if str(path).startswith("hf://"):
            try:
                import huggingface_hub  # noqa: F401 - registers the hf:// file system with fsspec
            except ImportError:
                raise ValueError("reading hf:// datasets needs huggingface_hub: pip install 'tagstream[hf]'") from None
        super().__init__(path, options)

    @classmethod
    def claims_name(cls, name: str) -> bool:
        return name.startswith(HUB_PREFIX)

    @classmethod
    def claims_folder(cls, folder: Path) -> bool:
        """A folder with Parquet files under data/, as the hub lays a dataset out."""
        data = folder / "data"
        return data.is_dir() and any(p.name.lower().endswith(PARQUET_SUFFIXES) for p in data.rglob("*"))

    def describe(self) -> dict:
        return {**super().describe(), "split": self.options.split}

    def _files(self) -> list[str]:
        files = expand(self.spec, PARQUET_SUFFIXES)
        top = storage.local_path(self.spec)
        base = str(top.resolve()) if top is not None else self.spec.rstrip("/")
        if files == [base] or files == [self.spec]:  # not a folder: expand named the spec itself
            raise ValueError(
                f"{storage.redact(self.spec)}: no dataset folder there (the hub lays one out as "
                "data/<split>-00000-of-0000N.parquet); check the name, and that the hub can be reached"
            )
        rel = {f: f[len(base) + 1 :] if f.startswith(base + "/") else f.rsplit("/", 1)[-1] for f in files}
        chosen = [f for f in files if file_split(rel[f]) == self.options.split]
        if not chosen:
            found = sorted({file_split(r) for r in rel.values()})
            raise ValueError(
                f"{storage.redact(self.spec)}: no Parquet file of split {self.options.split!r}; "
                f"splits found: {', '.join(found)} (choose one with --split)"
            )
        return chosen
