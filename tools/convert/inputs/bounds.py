"""Every bound an input is read under, in one place (the README's "Bounds" table states them): each is checked
against what a header or footer says before the bytes it describes are read, so a small hostile file never costs
more memory than these allow, whatever it expands into.

The image bound is the conversion's --max-file-bytes (ImageOptions.max_file_bytes), handed to each input kind as
its `item_limit`; the others are fixed.
"""

from __future__ import annotations

ITEM_LIMIT = 64 << 20  # --max-file-bytes' default: an image (file, tar member, table cell) larger is not read
TEXT_MEMBER_LIMIT = 1 << 20  # a tar sample's .json/.txt member larger is not read: the sample is rejected
MEMBERS_PER_SAMPLE = 64  # members of one tar sample beyond this reject it (a tar of one key and 10^6 extensions)
CHUNK_FACTOR = 16  # a Parquet row group's column read holds at most this many item limits uncompressed (1 GiB)
LINE_LIMIT = 1 << 20  # bytes of one JSON or CSV line (a quoted CSV record may span lines: of one record)
JSON_DEPTH = 64  # nesting of a JSON line (objects and lists) beyond which it is rejected unparsed
STATS_LIMIT = 1 << 20  # bytes of an img2dataset NNNNN_stats.json
IN_FLIGHT_BYTES = 256 << 20  # image bytes handed to decoding workers and not yet returned (engine.py)


def chunk_limit(item_limit: int) -> int:
    """The most uncompressed bytes of one Parquet column chunk that are read (the footer says how many)."""
    return CHUNK_FACTOR * item_limit


def oversized_chunks(row_group, columns: set[str], limit: int) -> str | None:
    """Why a Parquet row group's `columns` are not read (pyarrow RowGroupMetaData: each column chunk's
    uncompressed size, from the footer, over `limit`), or None. A zstd page of zeros is a few KB on disk."""
    for i in range(row_group.num_columns):
        chunk = row_group.column(i)
        name = chunk.path_in_schema.split(".", 1)[0]
        if name in columns and chunk.total_uncompressed_size > limit:
            return (
                f"column {name!r} holds {chunk.total_uncompressed_size} bytes uncompressed (over {limit}, "
                f"{CHUNK_FACTOR} x --max-file-bytes): not read; write the table with smaller row groups"
            )
    return None


def json_too_deep(text: str | bytes, limit: int = JSON_DEPTH) -> bool:
    """Whether a JSON text nests objects/lists deeper than `limit` (brackets inside strings not counted): checked
    before json.loads, whose recursion a deep line would exhaust."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if text.count("[") + text.count("{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False
