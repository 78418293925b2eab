"""Rows of an Arrow table as conversion Items: what Parquet tables and Hugging Face datasets (Parquet files and
`save_to_disk` Arrow streams) share, read one record batch at a time.

The image column holds a path (relative to the table's folder, or to `image_root`), a URL, the image bytes (a
binary column, as img2dataset writes them), or a Hugging Face `Image` feature: a struct {bytes, path} whose bytes
are used when present, else its path. When the table has no column named `image_column`, its Hugging Face
metadata (the schema's b"huggingface" key) may name an Image feature: that column is taken. Tags come from a
list-of-strings or a string column, and the #hashtags of a caption column. The bytes of each image cell are
measured in Arrow before any cell becomes a Python object: a cell over CELL_LIMIT is rejected as file_too_large
without being copied.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from tagstream.loader.data import storage
from tagstream.tools.convert.inputs import img2dataset
from tagstream.tools.convert.inputs.base import RAW_LIMIT, InputKind, Item, utf8_ok
from tagstream.tools.convert.inputs.img2dataset import SIDECAR_COLUMNS
from tagstream.tools.convert.inputs.paths import display_name
from tagstream.tools.convert.inputs.tag_text import caption_hashtags, split_tag_cell

CELL_LIMIT = 1 << 30  # an image cell larger than this is rejected, never copied out of Arrow's buffers
BATCH_ROWS = 256  # rows decoded at once from a Parquet row group (memory: a batch, not a row group)


@dataclass
class TableScan:
    """What the scan learned about one table file."""

    path: str
    rows: int  # rows readable (before the damage, if any)
    row_groups: list[int]  # rows per Parquet row group, or per record batch of an Arrow stream
    damage: str | None  # why the file (or its rest after `rows` rows) cannot be read: one more, rejected input

    @property
    def inputs(self) -> int:
        return self.rows + (1 if self.damage is not None else 0)


class TablesInput(InputKind):
    """The input kinds read as a list of tables (Parquet files, a saved dataset's Arrow streams): `scan` fills
    `self.tables` with one TableScan each, and `_table_items` yields one table's items from a row on; the scan
    state and the walk over the tables are the same for every such kind."""

    tables: list[TableScan] | None = None

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
        raise NotImplementedError


def hf_image_columns(schema) -> list[str]:
    """The top-level columns that a table's Hugging Face metadata declares as Image features, in schema order."""
    try:
        features = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))["info"]["features"]
    except (ValueError, KeyError, TypeError):
        return []
    if not isinstance(features, dict):
        return []
    return [n for n in schema.names if isinstance(features.get(n), dict) and features[n].get("_type") == "Image"]


def image_column(schema, wanted: str, where: str) -> str:
    """`wanted` when the table has it, else the first Hugging Face Image feature; ValueError naming the columns."""
    if wanted in schema.names:
        return wanted
    found = hf_image_columns(schema)
    if found:
        return found[0]
    raise ValueError(
        f"{storage.redact(where)}: no image column {wanted!r} (columns: {', '.join(schema.names) or 'none'}); "
        "choose one with --image-column"
    )


def cell_kind(arrow_type) -> str:
    """'binary' (image bytes), 'struct' (a Hugging Face Image: bytes and/or path) or 'text' (a path or URL)."""
    import pyarrow as pa

    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "binary"
    if pa.types.is_struct(arrow_type) and {arrow_type.field(i).name for i in range(arrow_type.num_fields)} & {
        "bytes",
        "path",
    }:
        return "struct"
    return "text"


def cell_sizes(column, kind: str) -> list[int | None] | None:
    """Byte length of each image cell (None: no bytes), measured in Arrow; None for a text column."""
    import pyarrow.compute as pc

    if kind == "binary":
        return pc.binary_length(column).to_pylist()
    if kind == "struct" and column.type.get_field_index("bytes") >= 0:
        return pc.binary_length(pc.struct_field(column, "bytes")).to_pylist()
    return None


class TableRows:
    """Turns record batches of one table file into Items (see the module docstring)."""

    def __init__(self, options, column: str, root: str, name: str, status_field: str = ""):
        self.options = options  # a kind's options with csv_tables.TableColumns' fields
        self.status = status_field  # img2dataset's download status column ('' = none)
        self.column = column  # the image column, resolved by image_column()
        self.root = root  # the folder relative image paths are resolved against
        self.name = name  # the file's name in messages

    def wanted(self, names: list[str]) -> list[str]:
        """The columns to read of a table with these columns."""
        o = self.options
        cols = (self.column, o.tags_column, o.caption_column, o.id_column, self.status, *SIDECAR_COLUMNS)
        return sorted({c for c in cols if c and c in names})

    def items(self, batch, pos: int, row: int, skip: int = 0) -> Iterator[Item]:
        """Items of `batch`'s rows from its row `skip` on; its row 0 is the file's row `row` (0-based), input `pos`."""
        kind = cell_kind(batch.schema.field(self.column).type)
        image = batch.column(self.column)
        sizes = cell_sizes(image, kind)
        over = {r for r, n in enumerate(sizes or ()) if n is not None and n > CELL_LIMIT}
        cols = {}
        for c in batch.schema.names:
            if c != self.column or not over:
                cols[c] = batch.column(c).to_pylist()
            else:  # cell by cell, the oversized ones never copied
                cols[c] = [None if r in over else image[r].as_py() for r in range(batch.num_rows)]
        for r in range(skip, batch.num_rows):
            values = {c: cols[c][r] for c in cols}
            size = sizes[r] if sizes is not None else None
            yield self._item(pos + r, row + r + 1, values, kind, size if r in over else None)

    def _item(self, pos: int, line: int, v: dict, kind: str, oversized: int | None) -> Item:
        o = self.options
        where = f"{self.name}:{line}"
        shown = {
            k: ({f: x[f] for f in x if f != "bytes"} if k == self.column and isinstance(x, dict) else x)
            for k, x in v.items()
        }
        shown = {k: x for k, x in shown.items() if not isinstance(x, bytes)}
        raw = json.dumps(shown, default=str, ensure_ascii=False)[:RAW_LIMIT]
        status = v.get(self.status) if self.status else None
        if isinstance(status, str) and status != "success":  # img2dataset's failed sample: its status, error, URL, key
            return img2dataset.failed(pos, line, raw, where, v, self.status)
        if oversized is not None:
            return Item(
                pos, line, raw, where, (), "", f"image cell of {oversized} bytes (over {CELL_LIMIT})", "file_too_large"
            )
        image = v.get(self.column)
        if kind == "struct" and isinstance(image, dict):
            data, stored = image.get("bytes"), image.get("path")
            image = data if data is not None else stored
            kind = "binary" if data is not None else "text"
        else:
            stored = None
        if image is None or (kind != "binary" and not str(image).strip()):
            return Item(pos, line, raw, where, (), "", f"empty image column {self.column!r}")
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
        if kind == "binary":
            path, data = where, bytes(image)
        else:
            image = str(image).strip()
            path = image if storage.is_url(image) or image.startswith("/") else storage.join(self.root, image)
            data = None
        sid = v.get(o.id_column)
        # a Hugging Face Image's own path (a file name) names it as it was stored; a bare path column, its path
        sid = str(sid) if sid is not None else (stored if isinstance(stored, str) and stored else path)
        if not all(utf8_ok(s) for s in (caption, sid, *tags)):
            return Item(pos, line, raw, where, (), "", "row holds text that is not valid Unicode")
        return Item(pos, line, raw, path, tuple(tags) + tuple(caption_hashtags(caption)), sid, data=data)
