"""A folder written by Hugging Face `Dataset.save_to_disk` as a conversion input, read through pyarrow (the `datasets`
library is not needed): Arrow IPC stream files `data-0000i-of-0000N.arrow`, in the order state.json lists them,
beside dataset_info.json; a `DatasetDict` folder (dataset_dict.json, one such folder per split) is read at its
`split`. Rows become Items as a Parquet table's do (table_rows.py: the Image feature's struct, tags, captions).

Positions: the scan reads every stream's record batch headers once (a local file is memory-mapped, so the batch
bodies, the images, are not read) and keeps the rows of each batch; `items(start)` skips to the batch holding
`start`. A stream damaged after k rows counts k + 1 inputs (the last one is the reject naming the damage); a file
state.json lists that is missing counts 1.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from tagstream.loader.data import storage
from tagstream.tools.convert.inputs.base import Item
from tagstream.tools.convert.inputs.csv_tables import TableColumns
from tagstream.tools.convert.inputs.paths import file_size
from tagstream.tools.convert.inputs.table_rows import TableRows, TableScan, TablesInput, image_column

STATE = "state.json"  # the saved dataset's file list (`_data_files`)
INFO = "dataset_info.json"
DICT = "dataset_dict.json"  # a DatasetDict: one saved dataset per split folder
STATE_LIMIT = 16 << 20  # bytes of state.json / dataset_dict.json read at most


@dataclass(frozen=True)
class SavedOptions(TableColumns):
    """A table's columns, where relative image paths lead, and the split of a DatasetDict."""

    image_root: str = ""  # the folder (or URL) relative image paths are resolved against ('' = the dataset's folder)
    split: str = "train"  # a DatasetDict's split to convert (its folder)


def _read_json(url: str) -> dict:
    size = file_size(url)
    if size is None:
        raise ValueError(f"{storage.redact(url)} is missing: not a folder written by save_to_disk")
    if size > STATE_LIMIT:
        raise ValueError(f"{storage.redact(url)} holds {size} bytes (over {STATE_LIMIT}): not a save_to_disk state")
    try:
        obj = json.loads(storage.read_bytes(url))
    except ValueError as exc:
        raise ValueError(f"{storage.redact(url)} is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{storage.redact(url)} holds a JSON {type(obj).__name__}, expected an object")
    return obj


@contextmanager
def _stream(path: str):
    """A record batch reader over an Arrow IPC stream file, memory-mapped when local."""
    import pyarrow as pa

    local = storage.local_path(path)
    with pa.memory_map(str(local)) if local is not None else storage.open_read(path) as f:
        yield pa.ipc.open_stream(f)


class SavedInput(TablesInput):
    """A save_to_disk folder (see the module docstring)."""

    name = "hf-saved"
    title = "Hugging Face save_to_disk folders"
    options_type = SavedOptions
    takes = "folder"

    def __init__(self, path, options: SavedOptions):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError("reading Arrow files needs pyarrow: pip install 'tagstream[parquet]'") from None
        local = storage.local_path(options.image_root) if options.image_root else None
        if local is not None:  # a rerun from another directory names the same images
            options = replace(options, image_root=os.path.abspath(local))
        super().__init__(path, options)
        self.spec = str(path).rstrip("/")
        self.tables: list[TableScan] | None = None

    @classmethod
    def claims_folder(cls, folder: Path) -> bool:
        """A folder with save_to_disk's state.json and dataset_info.json, or a DatasetDict's dataset_dict.json."""
        return ((folder / STATE).is_file() and (folder / INFO).is_file()) or (folder / DICT).is_file()

    def describe(self) -> dict:
        root = {"image_root": self.options.image_root} if self.options.image_root else {}
        return {"columns": self.options.columns(), "split": self.options.split, **root}

    def _folder(self) -> str:
        """The saved dataset's folder: SRC, or SRC/<split> of a DatasetDict."""
        if file_size(storage.join(self.spec, DICT)) is None:
            return self.spec
        splits = _read_json(storage.join(self.spec, DICT)).get("splits")
        if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
            raise ValueError(f"{storage.redact(self.spec)}/{DICT}: 'splits' must be a list of names")
        if self.options.split not in splits:
            raise ValueError(
                f"{storage.redact(self.spec)}: no split {self.options.split!r} in this DatasetDict; "
                f"splits: {', '.join(splits) or 'none'} (choose one with --split)"
            )
        return storage.join(self.spec, self.options.split)

    def _files(self) -> list[str]:
        """The Arrow files state.json lists, in its order; a name that is not a plain file name is refused."""
        folder = self._folder()
        listed = _read_json(storage.join(folder, STATE)).get("_data_files")
        if not isinstance(listed, list) or not listed:
            raise ValueError(f"{storage.redact(folder)}/{STATE}: '_data_files' must list the dataset's Arrow files")
        files = []
        for entry in listed:
            name = entry.get("filename") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
                raise ValueError(f"{storage.redact(folder)}/{STATE}: {name!r} is not a file name in the folder")
            files.append(storage.join(folder, name))
        return files

    def scan(self) -> tuple[int, str]:
        import pyarrow as pa

        h = hashlib.sha256()
        self.tables = []
        for path in self._files():
            size = file_size(path)
            h.update(f"{path}\0{size}\n".encode("utf-8", "surrogateescape"))
            if size is None:
                self.tables.append(TableScan(path, 0, [], "no such file"))
                continue
            batches: list[int] = []
            damage = None
            try:
                with _stream(path) as reader:
                    image_column(reader.schema, self.options.image_column, path)
                    h.update(f"{reader.schema}\0".encode())
                    for batch in reader:
                        batches.append(batch.num_rows)
            except (storage.StorageError, FileNotFoundError, PermissionError):
                raise
            except (pa.ArrowException, OSError) as exc:
                damage = f"not a readable Arrow stream after {sum(batches)} rows: {type(exc).__name__}: {exc}"
            h.update(f"{batches}\0{damage}\n".encode())
            self.tables.append(TableScan(path, sum(batches), batches, damage))
        return sum(t.inputs for t in self.tables), h.hexdigest()

    def _table_items(self, t: TableScan, base: int, skip: int, name: str) -> Iterator[Item]:
        import pyarrow as pa

        done = skip  # the next row to hand out
        error = t.damage
        if skip < t.rows:
            try:
                with _stream(t.path) as reader:
                    column = image_column(reader.schema, self.options.image_column, t.path)
                    folder = self.options.image_root or t.path.rsplit("/", 1)[0]
                    rows = TableRows(self.options, column, folder, name)
                    at = 0
                    for batch in reader:
                        if at >= t.rows:  # more than the scan saw: left to a rerun, which refuses
                            break
                        if at + batch.num_rows > skip:
                            for item in rows.items(batch, base + at, at, max(0, skip - at)):
                                yield item
                                done = item.pos - base + 1
                        at += batch.num_rows
            except (storage.StorageError, FileNotFoundError, PermissionError):
                raise
            except (pa.ArrowException, OSError) as exc:
                error = error or f"{type(exc).__name__}: {exc}"
        for k in range(done, t.inputs):  # the unreadable rest, as many inputs as the scan counted
            what = f"{name}:{k + 1}" if k < t.rows else name
            reason = "missing_file" if t.damage == "no such file" else "damaged_file"
            yield Item(base + k, k + 1, what, what, (), "", error or "the stream ended early", reason)
