"""A tiny WordNet 3.0 noun database in wndb(5) format, written by tests; and where the real files are."""

from __future__ import annotations

from pathlib import Path

# synset key -> (words, gloss); index: lemma -> synset keys in sense order (first = most frequent)
SYNSETS = {
    "kitten": (["kitten", "kitty"], "young domestic cat"),
    "pool": (["pool", "kitty"], "the combined stakes of the betters"),
    "brown_bear": (["brown_bear", "bruin", "Ursus_arctos"], "large ferocious bear of Eurasia"),
    "bruin_tales": (["bruin"], "a conventional name for a bear used in tales"),
    "car": (["car", "auto", "automobile"], "a motor vehicle with four wheels"),
    "mouse": (["mouse"], "any of numerous small rodents"),
    "church": (["church", "Christian_church"], "one of the groups of Christians"),
}
SENSES = {
    "kitten": ["kitten"],
    "kitty": ["kitten", "pool"],
    "pool": ["pool"],
    "brown_bear": ["brown_bear"],
    "bruin": ["bruin_tales", "brown_bear"],
    "ursus_arctos": ["brown_bear"],
    "car": ["car"],
    "auto": ["car"],
    "automobile": ["car"],
    "mouse": ["mouse"],
    "church": ["church"],
    "christian_church": ["church"],
}
HEADER = "  1 This is a tiny test database in the format of WordNet 3.0  \n  2 license lines start with two spaces  \n"

REAL_WORDNET = Path("/usr/share/wordnet")


def write_wordnet_db(root: Path) -> dict[str, int]:
    """Write index.noun, data.noun (true byte offsets) and noun.exc under root; returns synset key -> offset."""
    root.mkdir(parents=True, exist_ok=True)
    data = HEADER.encode()
    offsets: dict[str, int] = {}
    for key, (words, gloss) in SYNSETS.items():
        offsets[key] = len(data)
        pairs = " ".join(f"{w} 0" for w in words)
        data += f"{len(data):08d} 05 n {len(words):02x} {pairs} 000 | {gloss}  \n".encode()
    (root / "data.noun").write_bytes(data)
    lines = [HEADER]
    for lemma in sorted(SENSES):
        offs = " ".join(f"{offsets[k]:08d}" for k in SENSES[lemma])
        n = len(SENSES[lemma])
        lines.append(f"{lemma} n {n} 2 @ ~ {n} 0 {offs}  \n")
    (root / "index.noun").write_text("".join(lines))
    (root / "noun.exc").write_text("mice mouse\nchurches church\n")
    return offsets
