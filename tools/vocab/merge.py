"""Merge raw tags into candidate classes: connected components of "same synonym line" and "same WordNet synset".

Per-tag work over the tag table (tags << images). Components come from vectorised label
propagation (min member id per group, then pointer jumping), so chains such as
synonyms(a, b) + synset(b, c) join a, b and c whatever the order they are met.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tagstream.tools.vocab.lists import SynonymLine
from tagstream.tools.vocab.wordnet import WordNet

EXAMPLES = 10


@dataclass
class Candidates:
    """Candidate classes keyed by root tag id; filters remove entries (working state, not a result)."""

    members: dict[int, list[int]]  # root -> tag ids, by descending image count, then text
    names: dict[int, str]


def components(keys: list[NDArray[np.int64]], n: int) -> NDArray[np.int64]:
    """Connected components of n tags linked by equal keys (key -1: no link); label = smallest member id."""
    label = np.arange(n, dtype=np.int64)
    while True:
        before = label.copy()
        for key in keys:
            linked = np.flatnonzero(key >= 0)
            if linked.size == 0:
                continue
            _, inv = np.unique(key[linked], return_inverse=True)
            low = np.full(inv.max() + 1, n, dtype=np.int64)
            np.minimum.at(low, inv, label[linked])
            np.minimum.at(label, linked, low[inv])
            while not np.array_equal(label, label[label]):  # pointer jumping to the root
                label = label[label]
        if np.array_equal(label, before):
            return label


def synonym_keys(synonyms: list[SynonymLine], by_text: dict[str, list[int]], n: int) -> tuple[NDArray[np.int64], int]:
    """Tag id -> index of its synonyms line (-1: none); and how many listed words no tag carries."""
    key = np.full(n, -1, np.int64)
    unmatched = 0
    for i, line in enumerate(synonyms):
        for word in line.words:
            key[by_text.get(word, [])] = i
            unmatched += word not in by_text
    return key, unmatched


def wordnet_keys(wn: WordNet, texts: list[str], tag_ids: NDArray[np.int64], n: int) -> tuple[NDArray[np.int64], dict]:
    """Tag id -> synset offset of its first noun sense (-1: not in WordNet); and the match statistics."""
    key = np.full(n, -1, np.int64)
    how: dict[str, int] = {}
    ambiguous = 0
    for tid in tag_ids.tolist():
        match = wn.lookup(texts[tid])
        if match is not None:
            key[tid] = match.offset
            how[match.how] = how.get(match.how, 0) + 1
            ambiguous += match.senses > 1
    stats = {
        "lemmas": len(wn),
        "tags_matched": int((key >= 0).sum()),
        "matched_by": how,
        "matched_first_of_several_senses": ambiguous,
    }
    return key, stats


def merge(
    texts: list[str],
    counts: NDArray[np.int64],
    present: NDArray[np.bool_],
    syn_key: NDArray[np.int64],
    wn_key: NDArray[np.int64],
    synonyms: list[SynonymLine],
) -> tuple[Candidates, dict[str, int]]:
    """Candidate classes of the present tags, and how many tags each merge folded into another class.

    Naming: a synonyms canonical wins (of the line whose tags carry the most images, then the
    alphabetically first); otherwise the most frequent member, ties by text.
    """
    n = present.shape[0]
    n_tags = int(present.sum())
    n_syn = len(np.unique(components([syn_key], n)[present]))
    comp = components([syn_key, wn_key], n)
    n_all = len(np.unique(comp[present]))
    merged = {"total": n_tags - n_all, "synonyms": n_tags - n_syn, "wordnet": n_syn - n_all}

    counts_of, syn_of, comp_of = counts.tolist(), syn_key.tolist(), comp.tolist()
    members: dict[int, list[int]] = {}
    for tid in sorted(np.flatnonzero(present).tolist(), key=lambda t: (-counts_of[t], texts[t])):
        members.setdefault(comp_of[tid], []).append(tid)
    names: dict[int, str] = {}
    for root, tids in members.items():
        line_weight: dict[int, int] = {}
        for tid in tids:
            if syn_of[tid] >= 0:
                line_weight[syn_of[tid]] = line_weight.get(syn_of[tid], 0) + counts_of[tid]
        if line_weight:
            names[root] = min((-w, synonyms[i].canonical) for i, w in line_weight.items())[1]
        else:
            names[root] = texts[tids[0]]
    return Candidates(members, names), merged


def wordnet_examples(cands: Candidates, texts: list[str], wn_key: NDArray[np.int64], wn: WordNet) -> list[dict]:
    """The most frequent classes in which WordNet joined two or more tags, with the synset's words."""
    wn_of = wn_key.tolist()
    examples = []
    for root, tids in cands.members.items():
        if len(examples) == EXAMPLES:
            break
        synsets = [wn_of[t] for t in tids if wn_of[t] >= 0]
        shared = next((k for k in dict.fromkeys(synsets) if synsets.count(k) > 1), None)
        if shared is not None:
            words = [texts[t] for t in tids if wn_of[t] == shared]
            examples.append({"class": cands.names[root], "tags": words, "synset": list(wn.synset_words(shared))})
    return examples
