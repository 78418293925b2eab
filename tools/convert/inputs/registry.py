"""The input kinds `tagstream convert` reads, by --format name, and how --format auto picks one from what SRC is.

A new kind is a module with an InputKind subclass and its options dataclass (base.py), named here.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from tagstream.loader.data import storage
from tagstream.tools.convert.inputs.base import InputKind, KindOptions
from tagstream.tools.convert.inputs.csv_tables import CsvInput
from tagstream.tools.convert.inputs.hf_hub import HubInput
from tagstream.tools.convert.inputs.hf_saved import SavedInput
from tagstream.tools.convert.inputs.image_folder import ImageFolderInput
from tagstream.tools.convert.inputs.json_lines import JsonLinesInput
from tagstream.tools.convert.inputs.parquet_tables import ParquetInput
from tagstream.tools.convert.inputs.paths import is_pattern
from tagstream.tools.convert.inputs.tar_shards import TarInput
from tagstream.tools.convert.inputs.yfcc import YfccInput

INPUT_KINDS: dict[str, type[InputKind]] = {
    kind.name: kind
    for kind in (ImageFolderInput, JsonLinesInput, CsvInput, TarInput, ParquetInput, YfccInput, HubInput, SavedInput)
}
FORMATS = ("auto", *INPUT_KINDS)
# every option of every kind, by name (a name two kinds share means the same thing to both)
OPTION_NAMES = tuple(dict.fromkeys(f.name for kind in INPUT_KINDS.values() for f in fields(kind.options_type)))


def kind_options(kind: type[InputKind], **options) -> KindOptions:
    """The kind's options from keyword options, as `tagstream convert` passes them all: a name no kind knows is
    refused with the allowed set; the options of other kinds are left out."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(f"unknown source option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(OPTION_NAMES))}")
    own = {f.name for f in fields(kind.options_type)}
    return kind.options_type(**{k: v for k, v in options.items() if k in own})


def _by_name(name: str) -> str | None:
    return next((kind.name for kind in INPUT_KINDS.values() if kind.claims_name(name)), None)


def _known_suffixes() -> str:
    return "/".join(s for kind in INPUT_KINDS.values() for s in kind.suffixes)


def _by_folder(folder: Path) -> str:
    """The first kind (in registry order, the fallback last) that claims a local folder."""
    ordered = sorted(INPUT_KINDS.values(), key=lambda kind: kind.fallback)
    return next(kind.name for kind in ordered if kind.claims_folder(folder))


def detect_format(src: str | Path, fmt: str = "auto") -> str:
    """Resolve --format auto from what SRC is, or check that SRC can be of kind `fmt`; ValueError names the bad
    value and the allowed set."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown input format {fmt!r}; allowed: {', '.join(FORMATS)}")
    spec = str(src)
    local = storage.local_path(spec)
    if local is None or is_pattern(spec):  # a URL or a pattern: its files are listed by the reader
        kind = fmt if fmt != "auto" else _by_name(spec)
        if kind is None or not INPUT_KINDS[kind].remote:
            remote = [k.name for k in INPUT_KINDS.values() if k.remote]
            raise ValueError(
                f"{storage.redact(spec)}: a URL or a pattern needs --format {', '.join(remote[:-1])} "
                f"or {remote[-1]} (auto knows names ending in {_known_suffixes()})"
            )
        return kind
    if not local.exists():
        raise ValueError(f"source {local} does not exist")
    if (
        not local.is_dir() and not local.is_file()
    ):  # a FIFO would hang the scan (which reads it) and cannot be read twice
        raise ValueError(
            f"source {local} is not a regular file or a directory (a FIFO, socket or device); copy it to a file"
        )
    if fmt != "auto":
        takes = INPUT_KINDS[fmt].takes
        if takes != "either" and (takes == "folder") != local.is_dir():
            raise ValueError(f"--format {fmt} needs a {'directory' if takes == 'folder' else 'file'}, got {local}")
        return fmt
    if local.is_dir():
        return _by_folder(local)
    kind = _by_name(local.name)
    if kind is None:
        raise ValueError(
            f"cannot tell the format of {local} from its name (suffix {local.suffix.lower()!r}); use --format "
            f"{'|'.join(FORMATS[1:])} (auto knows directories, {_known_suffixes()})"
        )
    return kind
