"""JSON lines as a conversion input: one object per non-blank line, {"image": "a.jpg", "tags": ["#beach"],
"caption": "... #sunset", "id": 7}; the image path relative to the file's folder unless a URL or absolute.

Positions are line order (blank lines take none). A line before a part's start is only tested for being blank
(not parsed), and the scan's marks (every JSONL_MARK_EVERY positions: byte offset and line number) let a part
seek close to its start instead of reading the file from its top.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from tagstream.tools.convert.inputs.base import RAW_LIMIT, Item, KindOptions, rejected, utf8_ok
from tagstream.tools.convert.inputs.bounds import JSON_DEPTH, LINE_LIMIT, json_too_deep
from tagstream.tools.convert.inputs.tag_text import caption_hashtags
from tagstream.tools.convert.inputs.text_table import TextTableInput, numbered_lines

JSONL_MARK_EVERY = 1 << 18  # a JSON-lines scan notes where every 262,144th input starts (~13,000 marks at 3.5e9 lines)


@dataclass(frozen=True)
class JsonLinesOptions(KindOptions):
    """None: the fields of a line are fixed (image, tags, caption, id)."""


class JsonLinesInput(TextTableInput):
    name = "jsonl"
    title = "JSON lines"
    options_type = JsonLinesOptions
    suffixes = (".jsonl", ".ndjson", ".json")

    def _items(self, start: int = 0, marks: list | None = None) -> Iterator[Item]:
        with self._open() as f:
            for pos, lineno, data in numbered_lines(f, start, self._mark_before(start), marks, JSONL_MARK_EVERY):
                yield self._item(pos, lineno, data)

    def _item(self, pos: int, lineno: int, data: bytes) -> Item:
        if lineno == 1 and data.startswith(b"\xef\xbb\xbf"):  # a byte-order mark is not part of the JSON
            data = data[3:]
        if len(data) > LINE_LIMIT:
            cut = data[:RAW_LIMIT].decode("utf-8", "replace")
            return rejected(pos, lineno, cut, f"line {lineno} is longer than {LINE_LIMIT} bytes: not parsed")
        if json_too_deep(data):
            cut = data[:RAW_LIMIT].decode("utf-8", "replace")
            return rejected(pos, lineno, cut, f"line {lineno} nests deeper than {JSON_DEPTH} levels: not parsed")
        try:
            text = data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            return rejected(pos, lineno, data.decode("utf-8", "replace").rstrip("\r\n"), "line is not valid UTF-8")
        try:
            obj = json.loads(text)
        except ValueError as exc:
            return rejected(pos, lineno, text, f"line is not JSON: {exc}")
        if not isinstance(obj, dict):
            return rejected(pos, lineno, text, f"line is a JSON {type(obj).__name__}, expected an object")
        image = obj.get("image")
        if not isinstance(image, str) or not image:
            return rejected(pos, lineno, text, "no 'image' path (a non-empty string) on the line")
        tags = obj.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return rejected(pos, lineno, text, "'tags' must be a list of strings", image)
        caption = obj.get("caption", "")
        if not isinstance(caption, str):
            return rejected(pos, lineno, text, "'caption' must be a string", image)
        sid = obj.get("id", image)
        if not isinstance(sid, (str, int)) or isinstance(sid, bool):
            return rejected(pos, lineno, text, "'id' must be a string or an integer", image)
        if not all(utf8_ok(s) for s in (image, caption, str(sid), *tags)):  # JSON can escape lone surrogates
            return rejected(pos, lineno, text, "line holds text that is not valid Unicode (a lone surrogate)")
        raw_tags = tuple(tags) + tuple(caption_hashtags(caption))
        return Item(pos, lineno, text[:RAW_LIMIT], self._image_path(image), raw_tags, str(sid))
