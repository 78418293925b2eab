"""Raw tags as inputs hold them: a cell or field listing tags, and the #hashtags of free text (canonical forms are
tools/convert/tags.py's job)."""

from __future__ import annotations

import re
import unicodedata

_HASHTAG = re.compile(r"#(\w+)")
# list separators accepted in a CSV/TSV tags cell: commas, semicolons, whitespace
_CELL_SEP = re.compile(r"[,;\s]+")


def caption_hashtags(caption: str) -> list[str]:
    """The hashtags of a free-text caption: every '#' followed by Unicode word characters."""
    return _HASHTAG.findall(unicodedata.normalize("NFKC", caption))


def split_tag_cell(cell: str) -> list[str]:
    """A CSV/TSV tags cell ('#beach #sunset', 'beach,sunset', 'beach; sunset') -> raw tags."""
    return [t for t in _CELL_SEP.split(cell) if t]
