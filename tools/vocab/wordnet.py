"""A small reader of WordNet 3.0's noun database (wndb(5) format) mapping hashtags to synsets; index in memory, nothing cached on disk.

Lookup of a tag, first hit wins:
  1. the tag itself as a lemma of index.noun;
  2. its base forms as a noun (morphy: noun.exc exceptions, then the suffix rules s, ses, xes, zes,
     ches, shes, men, ies), each as a lemma;
  3. the tag with separators removed against lemmas with separators removed ("brownbear" ->
     "brown_bear"), then the same for each base form ("brownbears" -> "brown_bear").

Ambiguity policy: a lemma maps to its first (most frequent) sense, the first synset offset that
index.noun lists, and never to its other senses. Conservative: "kitty" (first sense: a pool of
money) does not merge with "kitten", and "machine" (sense 4: car) does not merge with "car". When
several lemmas collapse to one key without separators, the lemma with more sense-tagged occurrences
(tagsense_cnt) wins, then the alphabetically first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

INDEX_NOUN = "index.noun"
DATA_NOUN = "data.noun"
NOUN_EXC = "noun.exc"

# WordNet's morphy detachment rules for nouns: (suffix, replacement)
NOUN_RULES: tuple[tuple[str, str], ...] = (
    ("s", ""),
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
)
SEPARATORS = str.maketrans("", "", "_- '.")


class WordNetError(ValueError):
    """The WordNet directory is missing or its files do not parse as wndb(5)."""


def despace(text: str) -> str:
    """The key a hashtag and a multi-word lemma share: separators (_ - space ' .) removed."""
    return text.translate(SEPARATORS)


@dataclass(frozen=True)
class SynsetMatch:
    offset: int  # byte offset of the synset in data.noun (its id within the noun database)
    lemma: str  # the lemma that matched
    how: str  # "lemma", "morphy", "despaced" or "despaced+morphy"
    senses: int  # noun senses of the lemma: > 1 means the first-sense policy chose among several


class WordNet:
    """WordNet noun index: lemma -> first-sense synset offset, plus the morphy exception list."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        index = self.root / INDEX_NOUN
        for required in (INDEX_NOUN, DATA_NOUN):
            if not (self.root / required).is_file():
                raise WordNetError(
                    f"--wordnet {self.root}: no {required} there; point it at WordNet 3.0's database files "
                    f"(Debian: `apt-get install wordnet-base` puts them in /usr/share/wordnet)"
                )
        self.first_sense: dict[str, int] = {}
        self.senses: dict[str, int] = {}
        tagged: dict[str, int] = {}
        with open(index, encoding="latin-1") as f:
            for lineno, line in enumerate(f, 1):
                if line.startswith("  ") or not line.strip():
                    continue  # the license header lines start with two spaces
                parts = line.split()
                try:
                    synset_cnt = int(parts[2])
                    p_cnt = int(parts[3])
                    tagsense_cnt = int(parts[5 + p_cnt])
                    offsets = parts[6 + p_cnt :]
                    if synset_cnt < 1 or len(offsets) != synset_cnt:
                        raise ValueError(f"{synset_cnt} synsets announced, {len(offsets)} listed")
                    first = int(offsets[0])
                except (IndexError, ValueError) as exc:
                    raise WordNetError(
                        f"{index}:{lineno}: not a wndb index line ({exc}): {line.strip()[:80]!r}"
                    ) from exc
                self.first_sense[parts[0]] = first
                self.senses[parts[0]] = synset_cnt
                tagged[parts[0]] = tagsense_cnt
        if not self.first_sense:
            raise WordNetError(f"{index}: no lemmas found")
        # key without separators -> lemma; ties: more tagged senses, then alphabetical
        self.despaced: dict[str, str] = {}
        for lemma in sorted(self.first_sense, key=lambda w: (-tagged[w], w)):
            self.despaced.setdefault(despace(lemma), lemma)
        self.exceptions: dict[str, tuple[str, ...]] = {}
        exc_path = self.root / NOUN_EXC
        if exc_path.is_file():
            with open(exc_path, encoding="latin-1") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 2:
                        self.exceptions[parts[0]] = tuple(parts[1:])

    def __len__(self) -> int:
        return len(self.first_sense)

    def base_forms(self, word: str) -> list[str]:
        """Candidate noun base forms of an inflected word (morphy): exceptions first, then suffix rules."""
        forms = list(self.exceptions.get(word, ()))
        if len(word) > 2 and not word.endswith("ss"):
            for suffix, repl in NOUN_RULES:
                if word.endswith(suffix) and len(word) > len(suffix):
                    forms.append(word[: -len(suffix)] + repl)
        seen: set[str] = {word}
        return [w for w in forms if not (w in seen or seen.add(w))]

    def lookup(self, tag: str) -> SynsetMatch | None:
        """The first-sense noun synset of a hashtag, or None when WordNet does not know it as a noun."""
        word = tag.strip().lower().replace(" ", "_")
        if not word:
            return None
        if word in self.first_sense:
            return self._match(word, "lemma")
        forms = self.base_forms(word)
        for form in forms:
            if form in self.first_sense:
                return self._match(form, "morphy")
        for key, how in [(despace(word), "despaced")] + [(despace(f), "despaced+morphy") for f in forms]:
            lemma = self.despaced.get(key)
            if lemma is not None:
                return self._match(lemma, how)
        return None

    def _match(self, lemma: str, how: str) -> SynsetMatch:
        return SynsetMatch(self.first_sense[lemma], lemma, how, self.senses[lemma])

    def synset_words(self, offset: int) -> tuple[str, ...]:
        """The words of a synset, read from data.noun at its byte offset (w_cnt is hexadecimal)."""
        path = self.root / DATA_NOUN
        with open(path, "rb") as f:
            f.seek(offset)
            line = f.readline().decode("latin-1")
        parts = line.split()
        try:
            if int(parts[0]) != offset:
                raise ValueError(f"line at byte {offset} starts with {parts[0]!r}")
            w_cnt = int(parts[3], 16)
            words = tuple(parts[4 + 2 * k] for k in range(w_cnt))
        except (IndexError, ValueError) as exc:
            raise WordNetError(
                f"{path}: no synset at byte offset {offset} ({exc}); index.noun and data.noun do not match"
            ) from exc
        return words
