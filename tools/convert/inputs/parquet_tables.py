"""Parquet tables as a conversion source (pyarrow): users' own tables and img2dataset's per-shard Parquet files.

Columns as for CSV/TSV: `image_column` holds a path (relative to the table's folder), a URL, or the image
bytes themselves (a binary column, as img2dataset's parquet output format writes them); `tags_column` a list
of strings or one string of tags; `caption_column` free text with #hashtags; `id_column` the source id
(default: the image path, or "file:row" for bytes). Rows whose `status_field` column says anything but
"success" (img2dataset's failed downloads) are rejected with reason download_failed.

Positions: the scan reads each file's footer only (row count, row groups); `items(start)` opens the file
holding `start` and reads from the row group holding it, one row group at a time (memory: one row group).
A file whose footer cannot be read counts as one input, rejected as damaged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tagstream.loader.data import storage
from tagstream.tools.convert.inputs import img2dataset
from tagstream.tools.convert.inputs.base import RAW_LIMIT, InputKind, Item, utf8_ok
from tagstream.tools.convert.inputs.bounds import chunk_limit, oversized_chunks
from tagstream.tools.convert.inputs.csv_tables import TableColumns
from tagstream.tools.convert.inputs.img2dataset import SIDECAR_COLUMNS
from tagstream.tools.convert.inputs.paths import display_name, expand, file_size
from tagstream.tools.convert.inputs.tag_text import caption_hashtags, split_tag_cell

PARQUET_SUFFIXES = (".parquet",)


@dataclass
class TableScan:
    path: str
    rows: int
    row_groups: list[int]  # rows per row group
    damage: str | None  # the footer could not be read: the file counts as one rejected input

    @property
    def inputs(self) -> int:
        return 1 if self.damage is not None else self.rows


@contextmanager
def _parquet_file(path: str):
    import pyarrow.parquet as pq

    with storage.open_read(path) as f:
        yield pq.ParquetFile(f)


@dataclass(frozen=True)
class ParquetOptions(TableColumns):
    """A table's columns, and img2dataset's download status column."""

    status_field: str = "status"  # anything but "success" is rejected ('' = none)


class ParquetInput(InputKind):
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
        super().__init__(path, options)
        self.spec = str(path)
        self.tables: list[TableScan] | None = None

    @classmethod
    def claims_folder(cls, folder: Path) -> bool:
        """A folder with Parquet files at its top level."""
        return any(p.is_file() and p.name.lower().endswith(PARQUET_SUFFIXES) for p in folder.iterdir())

    def describe(self) -> dict:
        return {"columns": {**self.options.columns(), "status": self.options.status_field}}

    def scan(self) -> tuple[int, str]:
        import pyarrow as pa

        h = hashlib.sha256()
        self.tables = []
        for path in expand(self.spec, PARQUET_SUFFIXES):
            size = file_size(path)
            h.update(f"{path}\0{size}\n".encode("utf-8", "surrogateescape"))
            if size is None:
                self.tables.append(TableScan(path, 0, [], "no such file"))
                continue
            try:
                with _parquet_file(path) as pf:
                    meta, names = pf.metadata, pf.schema_arrow.names
                    schema = str(pf.schema_arrow)
            except (storage.StorageError, FileNotFoundError, PermissionError):
                raise
            except (pa.ArrowException, OSError, ValueError) as exc:
                self.tables.append(TableScan(path, 0, [], f"not a readable Parquet file: {type(exc).__name__}: {exc}"))
                continue
            if self.options.image_column not in names:
                raise ValueError(
                    f"{storage.redact(path)}: no image column {self.options.image_column!r} "
                    f"(columns: {', '.join(names) or 'none'}); choose one with --image-column"
                )
            groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            h.update(f"{schema}\0{groups}\0".encode())
            h.update(repr([meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]).encode())
            self.tables.append(TableScan(path, meta.num_rows, groups, None))
        return sum(t.inputs for t in self.tables), h.hexdigest()

    def scan_state(self, store=None) -> dict:  # store: unused (the state is small)
        if self.tables is None:
            raise RuntimeError("scan() the source before asking for its scan state")
        return {"tables": [[t.path, t.rows, t.row_groups, t.damage] for t in self.tables]}

    def load_scan_state(self, state: dict, store=None) -> None:
        self.tables = [TableScan(*row) for row in state["tables"]]

    def items(self, start: int = 0) -> Iterator[Item]:
        if self.tables is None:
            self.scan()
        names = [t.path for t in self.tables]
        base = 0
        for table in self.tables:
            if start < base + table.inputs:
                yield from self._table_items(table, base, max(0, start - base), display_name(table.path, names))
            base += table.inputs

    def _table_items(self, t: TableScan, base: int, skip: int, name: str) -> Iterator[Item]:
        import pyarrow as pa

        if t.damage is not None:
            yield Item(
                base, 1, name, name, (), "", t.damage, "missing_file" if t.damage == "no such file" else "damaged_file"
            )
            return
        o = self.options
        row = 0
        parent = t.path.rsplit("/", 1)[0]
        with _parquet_file(t.path) as pf:
            names = set(pf.schema_arrow.names)
            wanted = [
                c
                for c in (
                    o.image_column,
                    o.tags_column,
                    o.caption_column,
                    o.id_column,
                    o.status_field,
                    *SIDECAR_COLUMNS,
                )
                if c and c in names
            ]
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
                try:
                    table = pf.read_row_group(g, columns=sorted(set(wanted)))
                except (storage.StorageError, FileNotFoundError, PermissionError):
                    raise
                except (pa.ArrowException, OSError, ValueError) as exc:
                    for r in range(max(row, skip), row + n):
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
                    continue
                binary = pa.types.is_binary(table.schema.field(o.image_column).type) or pa.types.is_large_binary(
                    table.schema.field(o.image_column).type
                )
                cols = {c: table.column(c).to_pylist() for c in table.column_names}
                for r in range(max(0, skip - row), n):
                    values = {c: cols[c][r] for c in cols}
                    yield self._item(base + row + r, row + r + 1, name, values, binary, parent)
                row += n

    def _item(self, pos: int, line: int, name: str, v: dict, binary: bool, parent: str) -> Item:
        o = self.options
        where = f"{name}:{line}"
        raw = json.dumps({k: x for k, x in v.items() if not isinstance(x, bytes)}, default=str, ensure_ascii=False)
        raw = raw[:RAW_LIMIT]
        status = v.get(o.status_field) if o.status_field else None
        if isinstance(status, str) and status != "success":
            return img2dataset.failed(pos, line, raw, where, v, o.status_field)
        image = v.get(o.image_column)
        if image is None or (not binary and not str(image).strip()):
            return Item(pos, line, raw, where, (), "", f"empty image column {o.image_column!r}")
        tags = v.get(o.tags_column)
        if tags is None:
            tags = []
        elif isinstance(tags, str):
            tags = split_tag_cell(tags)
        elif not isinstance(tags, list) or not all(isinstance(t, str) for t in tags if t is not None):
            return Item(
                pos, line, raw, where, (), "", f"column {o.tags_column!r} must hold strings or lists of strings"
            )
        tags = [t for t in tags if t is not None]
        caption = v.get(o.caption_column) or ""
        if not isinstance(caption, str):
            return Item(pos, line, raw, where, (), "", f"column {o.caption_column!r} must hold strings")
        if binary:
            path, data = where, bytes(image)
        else:
            image = str(image).strip()
            path = image if storage.is_url(image) or image.startswith("/") else storage.join(parent, image)
            data = None
        sid = v.get(o.id_column)
        sid = path if sid is None else str(sid)
        if not all(utf8_ok(s) for s in (caption, sid, *tags)):
            return Item(pos, line, raw, where, (), "", "row holds text that is not valid Unicode")
        return Item(pos, line, raw, path, tuple(tags) + tuple(caption_hashtags(caption)), sid, data=data)
