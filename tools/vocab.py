"""Build vocab/NAME/ from the raw tags: merge (synonyms, WordNet), filter (stoplist, keep, counts), label images.

Order of operations (also written into report.json):
  canonical raw tags -> synonyms merge -> WordNet merge -> stoplist -> keep list -> drop classes with
  no image, min-count, top-K (image counts of the merged class: an image with two tags of one class
  counts once) -> class ids by descending count then name -> per-image labels (CSR, sorted, unique).

Per-tag work is Python over the tag table (tags << images); per-image work is vectorised NumPy over
the raw-tag CSR, one shard chunk at a time (a mapping raw tag -> class, then sort/unique of
(image, class) keys), so memory stays bounded and 10^8 images need no Python loop per image.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..loader import format as fmt
from ..loader.dataset import Dataset
from ..loader.vocab import VocabClass, write_vocab
from .tags import canonical_tag
from .vocab_lists import SynonymLine, file_digest, read_synonyms, read_taglist

ORDER = (
    "canonical raw tags (a tag no image carries is dropped: no_images)",
    "synonyms merge",
    "WordNet merge (first-sense noun synset)",
    "stoplist (class name listed: class dropped; member listed: that tag dropped)",
    "keep list (class kept when its name or a member is listed)",
    "min_count, then top_k (image counts of the merged class)",
    "class ids by descending count, then name",
    "per-image labels CSR (sorted unique class ids)",
)
DROP_REASONS = ("no_images", "stoplist", "not_in_keep", "min_count", "top_k")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CHUNK_IMAGES = 1 << 20
EXAMPLES = 10


@dataclass(frozen=True)
class VocabOptions:
    synonyms: str | None = None  # TSV: canonical <TAB> synonym [<TAB> synonym ...]
    wordnet: str | None = None  # WordNet 3.0 database directory (index.noun, data.noun, noun.exc)
    stoplist: str | None = None  # one tag per line
    keep: str | None = None  # one tag per line
    min_count: int = 1
    top: int | None = None

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise ValueError(f"min_count={self.min_count} must be >= 1")
        if self.top is not None and self.top < 1:
            raise ValueError(f"top={self.top} must be >= 1 (or None for no limit)")


@dataclass(frozen=True)
class VocabResult:
    path: Path
    report: dict


def _components(keys: list[NDArray[np.int64]], n: int) -> NDArray[np.int64]:
    """Connected components of tags linked by equal keys (key -1: no link); label = smallest member id."""
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


def _chunks(ds: Dataset, chunk: int) -> Iterator[tuple[int, NDArray[np.int64], NDArray[np.int32]]]:
    """(first global image, local tag offsets from 0, tag ids) for runs of at most `chunk` images."""
    for k in range(len(ds.shards)):
        offsets = ds.index_array(k, "tag_offsets")
        ids = ds.index_array(k, "tag_ids")
        n = offsets.shape[0] - 1
        if n != ds.shards[k]["images"] or int(offsets[-1]) != ids.shape[0]:
            raise fmt.FormatError(f"{ds.root}: tag index of shard {ds.shard_names[k]} does not match its image count")
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            off = np.asarray(offsets[lo : hi + 1], dtype=np.int64)
            yield int(ds.shard_starts[k]) + lo, off - off[0], np.asarray(ids[off[0] : off[-1]], dtype=np.int32)


def _image_classes(
    off: NDArray[np.int64], ids: NDArray[np.int32], tag_class: NDArray[np.int64], num_classes: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Sorted unique (local image, class) pairs of a chunk as two arrays; tags of class -1 vanish."""
    image = np.repeat(np.arange(off.shape[0] - 1, dtype=np.int64), np.diff(off))
    cls = tag_class[ids]
    keep = cls >= 0
    keys = np.sort(image[keep] * max(num_classes, 1) + cls[keep])
    # sort + neighbour compare, not np.unique: NumPy 2's hash-based unique is ~30x slower here
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if keys.size else keys
    return keys // max(num_classes, 1), keys % max(num_classes, 1)


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise ValueError(f"vocabulary name {name!r} must match {NAME_RE.pattern} (letters, digits, . _ -)")


def build_vocab(root: str | Path, name: str, options: VocabOptions, *, force: bool = False) -> VocabResult:
    """Build and write vocab/NAME/ of the dataset at root; returns where and the report. Shards are not read."""
    _check_name(name)
    ds = Dataset(root)
    if (ds.vocab_dir(name) / "vocab.json").exists() and not force:
        raise ValueError(f"{ds.root}: vocabulary {name!r} already exists; choose another --name or pass --force")
    rows = ds.tags
    num_tags = max((r[0] for r in rows), default=-1) + 1
    texts = [""] * num_tags
    for tid, text, _ in rows:
        texts[tid] = text
    present = np.zeros(num_tags, bool)
    present[[r[0] for r in rows]] = True

    # raw tag image counts, recounted from the index (tag ids are unique per image)
    raw_counts = np.zeros(num_tags, np.int64)
    no_tags = 0
    for _, off, ids in _chunks(ds, CHUNK_IMAGES):
        if ids.size and (ids.min() < 0 or ids.max() >= num_tags):
            raise fmt.FormatError(f"{ds.root}: tag index holds tag ids outside the {num_tags} rows of {fmt.TAGS}")
        raw_counts += np.bincount(ids, minlength=num_tags)
        no_tags += int(np.count_nonzero(np.diff(off) == 0))

    present &= raw_counts > 0  # a tag of tags.tsv that no image carries forms no class
    by_text: dict[str, list[int]] = {}
    for tid in np.flatnonzero(present):
        by_text.setdefault(canonical_tag(texts[tid]), []).append(int(tid))
    report: dict = {
        "order": list(ORDER),
        "images": ds.num_images,
        "images_without_tags": no_tags,
        "raw_tags": len(rows),
        "raw_tags_without_images": len(rows) - int(present.sum()),
    }

    # synonyms: key = synonym line index
    syn_key = np.full(num_tags, -1, np.int64)
    synonyms: list[SynonymLine] = read_synonyms(options.synonyms) if options.synonyms else []
    unmatched_words = 0
    for i, line in enumerate(synonyms):
        for word in line.words:
            for tid in by_text.get(word, ()):
                syn_key[tid] = i
            unmatched_words += word not in by_text
    if options.synonyms:
        report["synonyms"] = {"lines": len(synonyms), "words_not_in_dataset": unmatched_words}

    # WordNet: key = synset offset of the first sense
    wn_key = np.full(num_tags, -1, np.int64)
    if options.wordnet:
        from .wordnet import WordNet

        wn = WordNet(options.wordnet)
        how: dict[str, int] = {}
        for tid in np.flatnonzero(present):
            match = wn.lookup(texts[tid])
            if match is not None:
                wn_key[tid] = match.offset
                how[match.how] = how.get(match.how, 0) + 1
        report["wordnet"] = {"lemmas": len(wn), "tags_matched": int((wn_key >= 0).sum()), "matched_by": how}
    n_tags = int(present.sum())
    n_syn = len(np.unique(_components([syn_key], num_tags)[present]))
    comp = _components([syn_key, wn_key], num_tags)
    n_all = len(np.unique(comp[present]))
    report["tags_merged"] = {"total": n_tags - n_all, "synonyms": n_tags - n_syn, "wordnet": n_syn - n_all}

    # components -> named candidate classes: a synonyms canonical (of the heaviest line) wins,
    # else the most frequent member; members listed by descending count, then text
    counts_of, syn_of, wn_of, comp_of = raw_counts.tolist(), syn_key.tolist(), wn_key.tolist(), comp.tolist()
    members: dict[int, list[int]] = {}
    for tid in sorted(np.flatnonzero(present).tolist(), key=lambda t: (-counts_of[t], texts[t])):
        members.setdefault(comp_of[tid], []).append(tid)
    names: dict[int, str] = {}
    for root_id, tids in members.items():
        line_weight: dict[int, int] = {}
        for tid in tids:
            if syn_of[tid] >= 0:
                line_weight[syn_of[tid]] = line_weight.get(syn_of[tid], 0) + counts_of[tid]
        if line_weight:
            names[root_id] = min((-w, synonyms[i].canonical) for i, w in line_weight.items())[1]
        else:
            names[root_id] = texts[tids[0]]
    if options.wordnet:
        examples = []  # the most frequent classes in which WordNet joined two or more tags
        for root_id, tids in members.items():
            if len(examples) == EXAMPLES:
                break
            synsets = [wn_of[t] for t in tids if wn_of[t] >= 0]
            shared = next((k for k in dict.fromkeys(synsets) if synsets.count(k) > 1), None)
            if shared is not None:
                words = [texts[t] for t in tids if wn_of[t] == shared]
                examples.append({"class": names[root_id], "tags": words, "synset": list(wn.synset_words(shared))})
        report["wordnet"]["merged_examples"] = examples

    dropped = {reason: {"classes": 0, "tags": 0, "examples": []} for reason in DROP_REASONS}
    dropped["no_images"]["tags"] = report["raw_tags_without_images"]

    def drop(reason: str, root_id: int) -> None:
        entry = dropped[reason]
        entry["classes"] += 1
        entry["tags"] += len(members[root_id])
        if len(entry["examples"]) < EXAMPLES:
            entry["examples"].append(names[root_id])
        del members[root_id]

    if options.stoplist:
        stop = read_taglist(options.stoplist, what="stoplist")
        report["stoplist"] = {"entries": len(stop)}
        for root_id in list(members):
            if names[root_id] in stop:
                drop("stoplist", root_id)
                continue
            kept = [t for t in members[root_id] if canonical_tag(texts[t]) not in stop]
            dropped["stoplist"]["tags"] += len(members[root_id]) - len(kept)
            if not kept:
                drop("stoplist", root_id)
            else:
                members[root_id] = kept
    if options.keep:
        keep = read_taglist(options.keep, what="keep")
        hit: set[str] = set()
        for root_id in list(members):
            found = {names[root_id]} | {canonical_tag(texts[t]) for t in members[root_id]}
            if found & keep:
                hit |= found & keep
            else:
                drop("not_in_keep", root_id)
        missing = sorted(keep - hit)
        report["keep"] = {"entries": len(keep), "entries_matched": len(hit), "entries_unmatched": len(missing), "unmatched_examples": missing[:EXAMPLES]}

    # image counts of the candidate classes (one chunked pass)
    roots = sorted(members)
    tag_class = np.full(num_tags, -1, np.int64)
    tag_class[[t for r in roots for t in members[r]]] = np.repeat(np.arange(len(roots)), [len(members[r]) for r in roots])
    image_counts = np.zeros(len(roots), np.int64)
    for _, off, ids in _chunks(ds, CHUNK_IMAGES):
        _, cls = _image_classes(off, ids, tag_class, len(roots))
        image_counts += np.bincount(cls, minlength=len(roots))
    counts = image_counts.tolist()
    order = sorted(range(len(roots)), key=lambda j: (-counts[j], names[roots[j]]))
    final: list[int] = []
    for j in order:
        root_id = roots[j]
        if counts[j] < options.min_count:
            drop("min_count", root_id)
        elif options.top is not None and len(final) >= options.top:
            drop("top_k", root_id)
        else:
            final.append(j)
    report["dropped"] = dropped

    # class ids, then the labels (second chunked pass)
    new_id = np.full(max(len(roots), 1), -1, np.int64)
    new_id[final] = np.arange(len(final))
    classes = [
        VocabClass(i, names[roots[j]], counts[j], tuple(texts[t] for t in members[roots[j]]))
        for i, j in enumerate(final)
    ]
    tag_final = np.where(tag_class >= 0, new_id[np.maximum(tag_class, 0)], -1)
    offsets_parts, label_parts, base = [np.zeros(1, np.int64)], [], 0
    for _, off, ids in _chunks(ds, CHUNK_IMAGES):
        image, cls = _image_classes(off, ids, tag_final, len(final))
        per_image = np.bincount(image, minlength=off.shape[0] - 1)
        offsets_parts.append(base + np.cumsum(per_image))
        label_parts.append(cls.astype(np.int32))
        base += int(cls.shape[0])
    label_offsets = np.concatenate(offsets_parts)
    labels = np.concatenate(label_parts) if label_parts else np.zeros(0, np.int32)

    report["classes"] = len(final)
    report["tags_in_classes"] = sum(len(c.members) for c in classes)
    report["labels"] = int(labels.shape[0])
    report["images_without_class"] = int(np.count_nonzero(np.diff(label_offsets) == 0))
    report["top_classes"] = [[c.name, c.count] for c in classes[:EXAMPLES]]
    saved = {k: v for k, v in asdict(options).items()}
    for key in ("synonyms", "wordnet", "stoplist", "keep"):
        if saved[key] is not None:
            saved[key] = str(Path(saved[key]).resolve())
            if key != "wordnet":
                saved[f"{key}_sha256"] = file_digest(saved[key])
    path = write_vocab(ds, name, classes, label_offsets, labels, saved, report)
    return VocabResult(path, report)


def format_report(report: dict) -> str:
    """The report as a few human lines (the full report is report.json)."""
    merged = report["tags_merged"]
    lines = [
        f"classes: {report['classes']}  (from {report['raw_tags']} raw tags; {report['tags_in_classes']} tags in classes)",
        f"tags merged: {merged['total']}  (synonyms {merged['synonyms']}, WordNet {merged['wordnet']})",
    ]
    for reason, entry in report["dropped"].items():
        if entry["tags"] or entry["classes"]:
            examples = ", ".join(entry["examples"])
            lines.append(f"dropped by {reason}: {entry['classes']} classes, {entry['tags']} tags" + (f"  (e.g. {examples})" if examples else ""))
    if "keep" in report and report["keep"]["entries_unmatched"]:
        k = report["keep"]
        lines.append(f"keep list: {k['entries_unmatched']} of {k['entries']} entries match no tag (e.g. {', '.join(k['unmatched_examples'])})")
    lines.append(
        f"images: {report['images']}, with no class: {report['images_without_class']} "
        f"(of which {report['images_without_tags']} have no tag at all)"
    )
    if report["top_classes"]:
        lines.append("top classes: " + ", ".join(f"{n} ({c})" for n, c in report["top_classes"]))
    return "\n".join(lines)
