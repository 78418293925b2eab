"""Tag canonicalization: NFKC, case folding, '#' stripping, whitespace, duplicates, caption hashtags."""

from __future__ import annotations

import pytest

from tagstream.tools.convert.inputs.tag_text import caption_hashtags, split_tag_cell
from tagstream.tools.convert.tags import canonical_tag, canonical_tags


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("#Beach", "beach"),
        ("beach", "beach"),
        ("##Sunset", "sunset"),
        ("  #Kitten  ", "kitten"),
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),  # casefold, not lower: ß -> ss
        ("ＢＥＡＣＨ", "beach"),  # fullwidth -> ASCII by NFKC
        ("ﬁsh", "fish"),  # ligature by NFKC
        ("Cafe\u0301", "café"),  # combining accent composed by NFKC
        ("new york", "new_york"),
        ("new\tyork\ncity", "new_york_city"),  # no tab or newline survives (tags.tsv)
        ("# beach", "beach"),
        ("#", ""),
        ("   ", ""),
        ("", ""),
        ("#日本", "日本"),
        ("ΣΊΣΥΦΟΣ", "σίσυφοσ"),
    ],
)
def test_canonical_tag(raw, expected):
    assert canonical_tag(raw) == expected


def test_canonical_tags_drops_empty_and_duplicates_keeps_order():
    assert canonical_tags(["#Kitten", "kitten", "#", "", "KITTEN ", "#cat", "Cat"]) == ["kitten", "cat"]


def test_canonical_tags_is_idempotent():
    raws = ["#Straße", "ＢＥＡＣＨ", "new york", "#Cafe\u0301", "ǰ"]
    once = canonical_tags(raws)
    assert canonical_tags(once) == once


def test_caption_hashtags():
    caption = "Sunset at the #beach! #Sunset_2018, #日本 #love#tbt email a#b # lonely"
    assert caption_hashtags(caption) == ["beach", "Sunset_2018", "日本", "love", "tbt", "b"]
    assert canonical_tags(caption_hashtags("#Beach #beach #BEACH")) == ["beach"]
    assert caption_hashtags("no tags here") == []


def test_split_tag_cell():
    assert split_tag_cell("#beach #sunset") == ["#beach", "#sunset"]
    assert split_tag_cell("beach,sunset; sea") == ["beach", "sunset", "sea"]
    assert split_tag_cell("  ") == []
