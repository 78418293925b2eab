"""The WordNet noun reader: a tiny wndb(5) database written here (always), and the real WordNet 3.0 files when installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagstream.tools.vocab.wordnet import WordNet, WordNetError, despace
from tests.helpers.wordnet import REAL_WORDNET, SENSES, write_wordnet_db


@pytest.fixture
def tiny_wn(tmp_path: Path) -> tuple[WordNet, dict[str, int]]:
    offsets = write_wordnet_db(tmp_path / "wn")
    return WordNet(tmp_path / "wn"), offsets


def test_lemma_lookup_takes_the_first_sense(tiny_wn):
    wn, off = tiny_wn
    assert len(wn) == len(SENSES)
    assert wn.lookup("kitten").offset == off["kitten"]
    assert wn.lookup("kitty").offset == off["kitten"]  # first sense of kitty here is the kitten synset
    assert wn.lookup("bruin").offset == off["bruin_tales"]  # not brown_bear: its second sense is ignored
    assert {wn.lookup(w).offset for w in ("car", "auto", "automobile")} == {off["car"]}
    assert wn.lookup("car").how == "lemma"
    assert (wn.lookup("kitty").senses, wn.lookup("kitten").senses) == (2, 1)


def test_tag_without_spaces_matches_the_multiword_lemma(tiny_wn):
    wn, off = tiny_wn
    m = wn.lookup("brownbear")
    assert (m.offset, m.lemma, m.how) == (off["brown_bear"], "brown_bear", "despaced")
    m = wn.lookup("brownbears")
    assert (m.offset, m.how) == (off["brown_bear"], "despaced+morphy")
    assert wn.lookup("ursusarctos").offset == off["brown_bear"]
    assert wn.lookup("Brown Bear").offset == off["brown_bear"]


def test_plurals_and_exceptions(tiny_wn):
    wn, off = tiny_wn
    assert wn.lookup("kittens").offset == off["kitten"]
    assert wn.lookup("kitties").offset == off["kitten"]  # ies -> y
    assert wn.lookup("mice").offset == off["mouse"]  # noun.exc
    assert wn.lookup("churches").offset == off["church"]
    assert wn.lookup("kittens").how == "morphy"
    assert wn.base_forms("churches") == ["church", "churche"]  # exception, then "s" -> ""; "ches" -> "ch" repeats
    assert wn.base_forms("glass") == []  # -ss words are not stripped
    assert wn.base_forms("is") == []  # too short


def test_unknown_and_empty_tags(tiny_wn):
    wn, _ = tiny_wn
    assert wn.lookup("tbt") is None
    assert wn.lookup("") is None
    assert wn.lookup("s") is None
    assert wn.lookup("😀") is None


def test_synset_words_read_at_the_byte_offset(tiny_wn):
    wn, off = tiny_wn
    assert wn.synset_words(off["car"]) == ("car", "auto", "automobile")
    assert wn.synset_words(off["brown_bear"]) == ("brown_bear", "bruin", "Ursus_arctos")
    with pytest.raises(WordNetError, match="do not match"):
        wn.synset_words(off["car"] + 3)


def test_despace():
    assert despace("brown_bear") == "brownbear"
    assert despace("t-shirt") == "tshirt"
    assert despace("jack-o'-lantern") == "jackolantern"


def test_missing_directory_or_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(WordNetError, match="no index.noun there.*wordnet-base"):
        WordNet(tmp_path / "nowhere")
    write_wordnet_db(tmp_path / "partial")
    (tmp_path / "partial" / "data.noun").unlink()
    with pytest.raises(WordNetError, match="no data.noun there"):
        WordNet(tmp_path / "partial")


def test_malformed_index_line_names_the_line(tmp_path: Path):
    root = tmp_path / "bad"
    write_wordnet_db(root)
    with open(root / "index.noun", "a") as f:
        f.write("zebra n 2 0 1 0 01234567\n")  # announces 2 synsets, lists 1
    with pytest.raises(WordNetError, match=r"index\.noun:\d+: not a wndb index line"):
        WordNet(root)


@pytest.mark.skipif(
    not REAL_WORDNET.is_dir(),
    reason="WordNet 3.0 not installed (/usr/share/wordnet; `make install` tries apt-get install wordnet-base)",
)
def test_real_wordnet():
    wn = WordNet(REAL_WORDNET)
    assert len(wn) > 100_000
    bear = wn.lookup("brownbear")
    assert bear.lemma == "brown_bear" and "bruin" in wn.synset_words(bear.offset)
    assert wn.lookup("kittens").offset == wn.lookup("kitten").offset
    assert wn.lookup("car").offset == wn.lookup("auto").offset == wn.lookup("automobile").offset
    assert wn.lookup("mice").offset == wn.lookup("mouse").offset
    assert wn.lookup("tshirt").offset == wn.lookup("t-shirt").offset
    assert wn.lookup("kitty").offset != wn.lookup("kitten").offset  # first sense of kitty: a pool of money
    assert wn.lookup("tbt") is None
