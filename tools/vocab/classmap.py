"""Downstream class names -> the pretraining vocabulary's hashtag classes, for zero-shot transfer through the hashtag
head (SWAG's protocol), with the machinery the vocabulary was built with.

A downstream class (its name canonicalised as a hashtag: "Brown Bear" -> "brown_bear") takes every vocabulary class
it meets by any of these, and each match says how:
  name      the class's own name;
  member    a tag merged into the class (its synonyms and WordNet mates that occur in the data);
  synonym   a word on the same line of the vocabulary's synonyms file (words that never occurred in the data too);
  wordnet   the same first-sense noun synset as one of the class's members (tools/vocab/wordnet.py's lookup, so
            "automobile" meets a class holding "car").
A class that meets none is unmapped: it is reported by name and can never be predicted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tagstream.loader.data import Dataset, Vocab, VocabClass
from tagstream.tools.convert.tags import canonical_tag
from tagstream.tools.vocab.lists import SynonymLine, read_synonyms
from tagstream.tools.vocab.wordnet import WordNet

HOW = ("name", "member", "synonym", "wordnet")


@dataclass(frozen=True)
class ClassMap:
    """hashtags: downstream class -> vocabulary class ids (empty: unmapped); how: downstream class -> {vocabulary
    class name: first rule of HOW that matched it}."""

    names: tuple[str, ...]
    hashtags: dict[str, tuple[int, ...]]
    how: dict[str, dict[str, str]] = field(default_factory=dict)
    sources: dict[str, str | None] = field(default_factory=dict)  # the synonyms file and WordNet folder used

    @property
    def unmapped(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if not self.hashtags[n])

    def summary(self) -> dict:
        return {
            "mapped": len(self.names) - len(self.unmapped),
            "classes": len(self.names),
            "unmapped": list(self.unmapped),
            "how": self.how,
            "sources": self.sources,
        }


def map_classes(
    names: list[str] | tuple[str, ...],
    classes: list[VocabClass],
    *,
    synonyms: list[SynonymLine] = (),
    wordnet: WordNet | None = None,
) -> ClassMap:
    """Each downstream class name -> the vocabulary classes it means (module docstring), in class-id order."""
    owner: dict[str, list[tuple[int, str]]] = {}  # a word -> (class id, "name" or "member")
    for c in classes:
        owner.setdefault(c.name, []).append((c.id, "name"))
        for m in c.members:
            owner.setdefault(canonical_tag(m), []).append((c.id, "member"))
    line_of = {w: line for line in synonyms for w in line.words}
    synset: dict[int, set[int]] = {}  # first-sense synset offset -> classes with a member there
    if wordnet is not None:
        for c in classes:
            for m in (c.name, *c.members):
                found = wordnet.lookup(m)
                if found is not None:
                    synset.setdefault(found.offset, set()).add(c.id)
    by_id = {c.id: c.name for c in classes}
    hashtags: dict[str, tuple[int, ...]] = {}
    how: dict[str, dict[str, str]] = {}
    for name in names:
        tag = canonical_tag(name)
        hits: dict[int, str] = {}
        for cid, kind in owner.get(tag, []):
            hits.setdefault(cid, kind)
        if tag in line_of:
            for word in line_of[tag].words:
                for cid, _ in owner.get(word, []):
                    hits.setdefault(cid, "synonym")
        if wordnet is not None and (found := wordnet.lookup(tag)) is not None:
            for cid in sorted(synset.get(found.offset, ())):
                hits.setdefault(cid, "wordnet")
        hashtags[name] = tuple(sorted(hits))
        how[name] = {by_id[cid]: hits[cid] for cid in sorted(hits)}
    return ClassMap(tuple(names), hashtags, how)


def vocabulary_map(
    dataset: str | Path, vocab: str, names: list[str] | tuple[str, ...], *, wordnet_dir: str | None = None
) -> ClassMap:
    """map_classes against vocab NAME of the pretraining dataset, with the synonyms file and WordNet it was built
    with (vocab.json's options); wordnet_dir adds WordNet where the vocabulary was built without it."""
    v = Vocab(Dataset(dataset), vocab)
    options = v.meta.get("options") or {}
    syn_path = options.get("synonyms")
    synonyms = read_synonyms(syn_path) if syn_path and Path(syn_path).is_file() else []
    wn_dir = options.get("wordnet") or wordnet_dir
    wordnet = WordNet(wn_dir) if wn_dir else None
    found = map_classes(names, v.classes(), synonyms=synonyms, wordnet=wordnet)
    sources = {"synonyms": syn_path if synonyms else None, "wordnet": str(wn_dir) if wordnet else None}
    return ClassMap(found.names, found.hashtags, found.how, sources)


DEFAULT_WORDNET = "/usr/share/wordnet"


def zero_shot_transfer(
    checkpoint: str, eval: str, *, wordnet_dir: str | None = None, out: str | Path | None = None, **options
) -> dict:
    """`transfer --mode zeroshot`: the eval dataset's classes mapped onto the checkpoint's pretraining vocabulary
    (its config's data.dataset and data.vocab), then train.zeroshot.run_zeroshot with `options`
    (ZeroShotConfig's fields: train, vocab, baseline, image_size, ...)."""
    from tagstream.train.checkpoint import load_checkpoint
    from tagstream.train.zeroshot import ZeroShotConfig, run_zeroshot

    data = load_checkpoint(checkpoint)["config"].get("data", {})
    names = Vocab(Dataset(eval), options.get("vocab", "labels")).class_names()
    if wordnet_dir is None and (Path(DEFAULT_WORDNET) / "index.noun").is_file():
        wordnet_dir = DEFAULT_WORDNET
    try:
        found = vocabulary_map(data["dataset"], data["vocab"], names, wordnet_dir=wordnet_dir)
    except (KeyError, OSError) as exc:
        raise ValueError(f"{checkpoint}: its pretraining vocabulary cannot be read for the class map ({exc})") from None
    cfg = ZeroShotConfig(checkpoint=checkpoint, eval=eval, class_map=found.hashtags, **options)
    return run_zeroshot(cfg, mapping=found.summary(), out=out)
