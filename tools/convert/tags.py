"""Hashtag canonicalization: one function from raw text to the canonical tag, so `#Kitten` and `kitten` meet.

Canonical form: Unicode NFKC, case-folded, surrounding whitespace stripped, leading '#' removed, inner
whitespace runs joined by '_' (tags.tsv is tab-separated, so no tab or newline survives); tags empty after
that are dropped. Synonyms (`kitty` vs `kitten`) are not merged here: that is a vocabulary's job. Raw tags are
read from the inputs by inputs/tag_text.py.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_SPACE = re.compile(r"\s+")


def canonical_tag(raw: str) -> str:
    """One raw tag -> canonical text ('' when nothing is left)."""
    text = unicodedata.normalize("NFKC", raw).casefold().strip()
    text = text.lstrip("#").strip()
    # casefold can produce text that NFKC would change again (e.g. 'ǰ'); normalise once more
    text = unicodedata.normalize("NFKC", text)
    return _SPACE.sub("_", text)


def canonical_tags(raws: Iterable[str]) -> list[str]:
    """Canonicalize a tag list: empty tags dropped, duplicates removed, first-appearance order kept."""
    seen: dict[str, None] = {}
    for raw in raws:
        tag = canonical_tag(raw)
        if tag:
            seen.setdefault(tag, None)
    return list(seen)
