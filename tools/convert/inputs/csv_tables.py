"""CSV/TSV tables as a conversion input (TSV by the .tsv suffix): a header row naming the columns, one input per
non-blank row; `image_column` a path (relative to the table's folder) or URL, `tags_column` tags separated by
commas, semicolons or spaces, `caption_column` free text whose #hashtags are tags, `id_column` the source id
(default: the image path). Rows are read with their byte offsets (csv_rows.py), so a part seeks to the scan's
nearest mark instead of parsing every row before its start.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tagstream.tools.convert.inputs.base import RAW_LIMIT, Item, KindOptions, rejected, utf8_ok
from tagstream.tools.convert.inputs.csv_reader import csv_header, csv_rows
from tagstream.tools.convert.inputs.tag_text import caption_hashtags, split_tag_cell
from tagstream.tools.convert.inputs.text_table import TextTableInput


def shown(name: str) -> str:
    """A name from the data as a message shows it: control characters (terminal escapes) written as escapes."""
    return name if name.isprintable() else name.encode("unicode_escape", "backslashreplace").decode("ascii")


@dataclass(frozen=True)
class TableColumns(KindOptions):
    """The columns of a table, CSV/TSV or Parquet."""

    image_column: str = "image"  # image path, URL, or (Parquet) the image bytes
    tags_column: str = "tags"  # tags (a list column, or a string of tags)
    caption_column: str = "caption"  # free text whose #hashtags are tags
    id_column: str = "id"  # source id

    def columns(self) -> dict[str, str]:
        return {
            "image": self.image_column,
            "tags": self.tags_column,
            "caption": self.caption_column,
            "id": self.id_column,
        }


@dataclass(frozen=True)
class CsvOptions(TableColumns):
    """A CSV/TSV table's columns."""


class CsvInput(TextTableInput):
    name = "csv"
    title = "CSV/TSV tables"
    options_type = CsvOptions
    suffixes = (".csv", ".tsv")

    def describe(self) -> dict:
        return {"columns": self.options.columns()}

    @property
    def _delimiter(self) -> str:
        return "\t" if str(self.path).lower().endswith(".tsv") else ","

    def _check_header(self) -> list[str]:
        with self._open() as f:
            header = csv_header(f, self._delimiter)
        self.header = header  # the columns, for a message about missing tags
        if self.options.image_column not in header:
            raise ValueError(
                f"{self.path}: the header has no image column {self.options.image_column!r} "
                f"(columns: {', '.join(map(shown, header)) or 'none'}); choose one with --image-column"
            )
        return header

    def _items(self, start: int = 0, marks: list | None = None) -> Iterator[Item]:
        header = self._check_header()
        col = {name: i for i, name in enumerate(header)}
        columns = self.options.columns()
        with self._open() as f:
            for pos, lineno, row, problem in csv_rows(f, self._delimiter, start, self._mark_before(start), marks):
                if row is None:
                    yield rejected(pos, lineno, "", f"CSV parser refused the row: {problem}")
                    continue
                raw = self._delimiter.join(row)
                if not all(utf8_ok(cell) for cell in row):
                    yield rejected(pos, lineno, raw.encode("utf-8", "replace").decode(), "row is not valid UTF-8")
                    continue
                if len(row) != len(header):
                    yield rejected(pos, lineno, raw, f"row has {len(row)} fields, the header has {len(header)}")
                    continue
                values = {name: (row[col[c]] if c in col else "") for name, c in columns.items()}
                image = values["image"].strip()
                if not image:
                    yield rejected(pos, lineno, raw, f"empty image column {self.options.image_column!r}")
                    continue
                raw_tags = tuple(split_tag_cell(values["tags"])) + tuple(caption_hashtags(values["caption"]))
                sid = values["id"].strip() or image
                yield Item(pos, lineno, raw[:RAW_LIMIT], self._image_path(image), raw_tags, sid)
