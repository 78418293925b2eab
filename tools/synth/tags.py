"""How the synthetic world's users tag: which concepts they tag, in which spelling and casing, what else
they add (non-visual and junk tags), and hashtags inside caption text. Noisy on purpose, like real feeds."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from tagstream.tools.convert.tags import canonical_tag
from tagstream.tools.synth.concepts import NONVISUAL, Concept

CAPTION_WORDS = (
    "so",
    "cute",
    "what a day",
    "weekend vibes",
    "can't believe this",
    "finally!",
    "best day ever",
    "look at this",
    "good times",
    "new post",
    "with my friends",
    "omg",
    "yesterday",
    "\U0001f60d",
    "\u2764\ufe0f",
    "again",
    "love it",
    "no words",
    "this!!",
)


@dataclass(frozen=True)
class TagModel:
    """Probabilities of the tagging behaviour (per image unless stated)."""

    missing: float = 0.2  # a true concept gets no tag at all
    extra_spelling: float = 0.3  # a tagged concept gets a second, different spelling (#kitten #kitty)
    wrong: float = 0.05  # a tag of a concept that is not in the image
    nonvisual_mean: float = 1.3  # Poisson mean of non-visual tags (#tbt, #love)
    junk_mean: float = 0.8  # Poisson mean of long-tail junk tags
    hash_prefix: float = 0.75  # a tag in a tag list starts with '#' (always in captions)

    def __post_init__(self) -> None:
        for name in ("missing", "extra_spelling", "wrong", "hash_prefix"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"TagModel.{name} = {p!r}: must be a probability in [0, 1]")
        for name in ("nonvisual_mean", "junk_mean"):
            if getattr(self, name) < 0:
                raise ValueError(f"TagModel.{name} = {getattr(self, name)!r}: must be >= 0")


def zipf_probs(n: int, exponent: float) -> np.ndarray:
    p = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return p / p.sum()


def spelling_probs(concept: Concept) -> np.ndarray:
    """Canonical name 55%, WordNet synonyms 25% together, variants 20% together (earlier ones likelier)."""
    syn, var = len(concept.synonyms), len(concept.variants)
    w = [0.55 + (0.0 if syn else 0.25)]
    if syn:
        w += [0.25 / syn] * syn
    if var:
        vw = 1.0 / np.arange(1, var + 1)
        w += list(0.2 * vw / vw.sum())
    else:
        w[0] += 0.2
    p = np.asarray(w)
    return p / p.sum()


def surface(token: str, rng: np.random.Generator, *, in_caption: bool, hash_prefix: float) -> str:
    """A raw way to write a canonical token; canonical_tag(surface(t)) == t always."""
    r = rng.random()
    if r < 0.7:
        s = token
    elif r < 0.9:
        s = token[:1].upper() + token[1:]
    elif r < 0.97:
        s = token.upper()
    elif in_caption:  # caption parsers find hashtags with \w+, which stops at odd code points
        s = token
    elif token.isascii():
        s = "".join(chr(ord(ch) + 0xFEE0) if ch.isalnum() else ch for ch in token)  # fullwidth: NFKC folds it back
    else:
        s = unicodedata.normalize("NFD", token)  # decomposed accents: NFKC composes them back
    if not in_caption and "_" in s and rng.random() < 0.5:
        s = s.replace("_", " ")
    if canonical_tag(s) != token:  # keep only forms that fold back (not "umbrella " for "umbrella_", not upper-cased ß)
        s = token
    if in_caption or rng.random() < hash_prefix:
        s = "#" + s
    return s


def draw_tokens(
    concepts: list[Concept],
    rng: np.random.Generator,
    *,
    model: TagModel,
    all_concepts: tuple[Concept, ...],
    concept_p: np.ndarray,
    junk: list[str],
    nonvisual_p: np.ndarray,
    junk_p: np.ndarray,
) -> list[str]:
    """Canonical tokens a user writes for an image showing `concepts`, in the order written."""
    tokens: list[str] = []
    for c in concepts:
        if rng.random() < model.missing:
            continue
        spellings = c.spellings()
        p = spelling_probs(c)
        first = int(rng.choice(len(spellings), p=p))
        tokens.append(spellings[first])
        if len(spellings) > 1 and rng.random() < model.extra_spelling:
            q = p.copy()
            q[first] = 0.0
            tokens.append(spellings[int(rng.choice(len(spellings), p=q / q.sum()))])
    if rng.random() < model.wrong:
        shown = {c.name for c in concepts}
        other = all_concepts[int(rng.choice(len(all_concepts), p=concept_p))]
        if other.name not in shown:
            tokens.append(other.name)
    tokens += [
        NONVISUAL[int(i)] for i in rng.choice(len(NONVISUAL), size=rng.poisson(model.nonvisual_mean), p=nonvisual_p)
    ]
    tokens += [junk[int(i)] for i in rng.choice(len(junk), size=rng.poisson(model.junk_mean), p=junk_p)]
    order = rng.permutation(len(tokens))
    seen: set[str] = set()
    out = []
    for i in order:  # people rarely repeat a tag verbatim
        if tokens[i] not in seen:
            seen.add(tokens[i])
            out.append(tokens[i])
    return out


def write_line(image: str, tokens: list[str], rng: np.random.Generator, *, caption: bool, model: TagModel) -> dict:
    """The JSON-lines record for an image: {"image", "tags": [...]} or {"image", "caption": "... #tag ..."}."""
    if not caption:
        return {
            "image": image,
            "tags": [surface(t, rng, in_caption=False, hash_prefix=model.hash_prefix) for t in tokens],
        }
    words = [CAPTION_WORDS[int(i)] for i in rng.choice(len(CAPTION_WORDS), size=int(rng.integers(1, 4)))]
    slots = np.sort(rng.integers(0, len(words) + 1, len(tokens)))  # hashtags keep their order among the words
    parts: list[str] = []
    k = 0
    for i in range(len(words) + 1):
        while k < len(tokens) and slots[k] == i:
            parts.append(surface(tokens[k], rng, in_caption=True, hash_prefix=1.0))
            k += 1
        if i < len(words):
            parts.append(words[i])
    return {"image": image, "caption": " ".join(parts)}
