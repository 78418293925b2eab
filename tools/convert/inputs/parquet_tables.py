"""Parquet tables as a conversion source (pyarrow): users' own tables, img2dataset's per-shard Parquet files and
Hugging Face datasets' Parquet files (the Image feature's {bytes, path} struct; table_rows.py reads the rows).

Columns as for CSV/TSV: `image_column` holds a path (relative to the table's folder, or to `image_root`), a URL,
the image bytes themselves (a binary column, as img2dataset's parquet output format writes them) or a Hugging
Face Image struct (found from the schema's metadata when the table has no `image_column`); `tags_column` a list
of strings or one string of tags; `caption_column` free text with #hashtags; `id_column` the source id
(default: the image path, the Image feature's stored path, or "file:row" for bytes). Rows whose `status_field`
column says anything but "success" (img2dataset's failed downloads) are rejected with reason download_failed.

Positions: the scan reads each file's footer only (row count, row groups); `items(start)` opens the file
holding `start` and reads from the row group holding it, BATCH_ROWS rows at a time (memory: a batch of rows,
pages streamed, not a row group). A file whose footer cannot be read counts as one input, rejected as damaged.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from tagstream.loader.data import storage
from tagstream.tools.convert.inputs.base import Item
from tagstream.tools.convert.inputs.bounds import chunk_limit, oversized_chunks
from tagstream.tools.convert.inputs.csv_tables import TableColumns
from tagstream.tools.convert.inputs.paths import expand, file_size
from tagstream.tools.convert.inputs.table_rows import BATCH_ROWS, TableRows, TableScan, TablesInput, image_column

PARQUET_SUFFIXES = (".parquet",)
READ_BUFFER = 1 << 20  # bytes of a column chunk read at once: pages are streamed, a row group is never read whole


@contextmanager
def _parquet_file(path: str):
    import pyarrow.parquet as pq

    with storage.open_read(path) as f:
        yield pq.ParquetFile(f, buffer_size=READ_BUFFER)


@dataclass(frozen=True)
class ParquetOptions(TableColumns):
    """A table's columns, and img2dataset's download status column."""

    status_field: str = "status"  # anything but "success" is rejected ('' = none)
    image_root: str = ""  # the folder (or URL) relative image paths are resolved against ('' = the table's folder)


class ParquetInput(TablesInput):
    """Parquet tables (see the module docstring)."""

    name = "parquet"
    title = "Parquet tables"
    options_type = ParquetOptions
    takes = "either"
    suffixes = PARQUET_SUFFIXES

    def __init__(self, path, options: ParquetOptions):
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ValueError("reading Parquet needs pyarrow: pip install 'tagstream[parquet]'") from None
        local = storage.local_path(options.image_root) if options.image_root else None
        if local is not None:  # a rerun from another directory names the same images
            options = replace(options, image_root=os.path.abspath(local))
        super().__init__(path, options)
        self.spec = str(path)
        self.tables: list[TableScan] | None = None

    def _files(self) -> list[str]:
        """The table files, in conversion order."""
        return expand(self.spec, PARQUET_SUFFIXES)

    @classmethod
    def claims_folder(cls, folder: Path) -> bool:
        """A folder with Parquet files at its top level."""
        return any(p.is_file() and p.name.lower().endswith(PARQUET_SUFFIXES) for p in folder.iterdir())

    def describe(self) -> dict:
        root = {"image_root": self.options.image_root} if self.options.image_root else {}
        return {"columns": {**self.options.columns(), "status": self.options.status_field}, **root}

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
            try:
                with _parquet_file(path) as pf:
                    meta, arrow_schema = pf.metadata, pf.schema_arrow
                    schema = str(arrow_schema)
            except (storage.StorageError, FileNotFoundError, PermissionError):
                raise
            except (pa.ArrowException, OSError, ValueError) as exc:
                self.tables.append(TableScan(path, 0, [], f"not a readable Parquet file: {type(exc).__name__}: {exc}"))
                continue
            image_column(arrow_schema, self.options.image_column, path)  # refused here, not row by row
            groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            h.update(f"{schema}\0{groups}\0".encode())
            h.update(repr([meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]).encode())
            self.tables.append(TableScan(path, meta.num_rows, groups, None))
        return sum(t.inputs for t in self.tables), h.hexdigest()

    def _table_items(self, t: TableScan, base: int, skip: int, name: str) -> Iterator[Item]:
        import pyarrow as pa

        if t.damage is not None:
            yield Item(
                base, 1, name, name, (), "", t.damage, "missing_file" if t.damage == "no such file" else "damaged_file"
            )
            return
        row = 0
        with _parquet_file(t.path) as pf:
            column = image_column(pf.schema_arrow, self.options.image_column, t.path)
            root = self.options.image_root or t.path.rsplit("/", 1)[0]
            rows = TableRows(self.options, column, root, name, self.options.status_field)
            wanted = rows.wanted(pf.schema_arrow.names)
            for g, n in enumerate(t.row_groups):
                if row + n <= skip:
                    row += n
                    continue
                over = oversized_chunks(pf.metadata.row_group(g), set(wanted), chunk_limit(self.item_limit))
                if over is not None:  # the footer says so: the group is not read
                    for r in range(max(row, skip), row + n):
                        yield Item(
                            base + r, r + 1, f"{name}:{r + 1}", name, (), "", f"row group {g}: {over}", "file_too_large"
                        )
                    row += n
                    continue
                done = max(row, skip)  # the group's next row to hand out
                try:
                    at = row
                    for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[g], columns=wanted):
                        for item in rows.items(batch, base + at, at, max(0, skip - at)):
                            yield item
                            done = item.pos - base + 1
                        at += batch.num_rows
                except (storage.StorageError, FileNotFoundError, PermissionError):
                    raise
                except (pa.ArrowException, OSError, ValueError) as exc:
                    for r in range(done, row + n):
                        yield Item(
                            base + r,
                            r + 1,
                            f"{name}:{r + 1}",
                            name,
                            (),
                            "",
                            f"row group {g} cannot be read: {type(exc).__name__}: {exc}",
                            "damaged_file",
                        )
                row += n
