"""Build vocab/NAME/ from the raw tags: merge (synonyms, WordNet), filter (stoplist, keep, counts), label images.

Order of operations (also written into report.json):
  canonical raw tags -> synonyms merge -> WordNet merge -> stoplist -> keep list -> min-count, then
  top-K (image counts of the merged class: an image with two tags of one class counts once) ->
  class ids by descending count then name -> per-image labels (CSR, sorted, unique).

Per-tag work is Python over the tag table (tags << images); per-image work is vectorised NumPy over
the raw-tag CSR, one shard chunk at a time (a mapping raw tag -> class, then sort/unique of
(image, class) keys), so memory stays bounded and 10^8 images need no Python loop per image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data import Dataset, Staged, VocabClass, stage_vocab, write_vocab
from tagstream.loader.data import format as fmt
from tagstream.tools.convert.tags import canonical_tag
from tagstream.tools.vocab.lists import file_digest, read_synonyms, read_taglist
from tagstream.tools.vocab.merge import EXAMPLES, Candidates, merge, synonym_keys, wordnet_examples, wordnet_keys
from tagstream.tools.vocab.wordnet import WordNet

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
CHUNK_IMAGES = 1 << 20


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


def _chunks(ds: Dataset, chunk: int) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int32]]]:
    """(tag offsets from 0, tag ids) for consecutive runs of at most `chunk` images, in global order."""
    for k in range(len(ds.shards)):
        offsets = ds.index_array(k, "tag_offsets")
        ids = ds.index_array(k, "tag_ids")
        n = offsets.shape[0] - 1
        if n != ds.shards[k]["images"] or int(offsets[-1]) != ids.shape[0]:
            raise fmt.FormatError(f"{ds.root}: tag index of shard {ds.shard_names[k]} does not match its image count")
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            off = np.asarray(offsets[lo : hi + 1], dtype=np.int64)
            yield off - off[0], np.asarray(ids[off[0] : off[-1]], dtype=np.int32)


def _image_classes(
    off: NDArray[np.int64], ids: NDArray[np.int32], tag_class: NDArray[np.int64], num_classes: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Sorted unique (local image, class) pairs of a chunk as two arrays; tags of class -1 vanish."""
    image = np.repeat(np.arange(off.shape[0] - 1, dtype=np.int64), np.diff(off))
    cls = tag_class[ids]
    keep = cls >= 0
    keys = np.sort(image[keep] * max(num_classes, 1) + cls[keep])
    # sort + neighbour compare, not np.unique: NumPy 2's hash-based unique is much slower here (docs/costs.md)
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if keys.size else keys
    return keys // max(num_classes, 1), keys % max(num_classes, 1)


class _Drops:
    """Dropped classes and tags by reason, with the first few class names as examples."""

    def __init__(self) -> None:
        self.table = {reason: {"classes": 0, "tags": 0, "examples": []} for reason in DROP_REASONS}

    def tags(self, reason: str, n: int) -> None:
        self.table[reason]["tags"] += n

    def drop(self, reason: str, cands: Candidates, root: int) -> None:
        entry = self.table[reason]
        entry["classes"] += 1
        entry["tags"] += len(cands.members.pop(root))
        if len(entry["examples"]) < EXAMPLES:
            entry["examples"].append(cands.names[root])


def _apply_stoplist(cands: Candidates, texts: list[str], stop: set[str], drops: _Drops) -> None:
    """A class whose name is listed goes; a listed member leaves its class (which stays if others remain)."""
    for root in list(cands.members):
        if cands.names[root] in stop:
            drops.drop("stoplist", cands, root)
            continue
        kept = [t for t in cands.members[root] if canonical_tag(texts[t]) not in stop]
        if not kept:
            drops.drop("stoplist", cands, root)
        else:
            drops.tags("stoplist", len(cands.members[root]) - len(kept))
            cands.members[root] = kept


def _apply_keep(cands: Candidates, texts: list[str], keep: set[str], drops: _Drops) -> dict:
    """Keep a class when its name or any member is listed; returns the keep-list section of the report."""
    hit: set[str] = set()
    for root in list(cands.members):
        found = ({cands.names[root]} | {canonical_tag(texts[t]) for t in cands.members[root]}) & keep
        if found:
            hit |= found
        else:
            drops.drop("not_in_keep", cands, root)
    missing = sorted(keep - hit)
    return {
        "entries": len(keep),
        "entries_matched": len(hit),
        "entries_unmatched": len(missing),
        "unmatched_examples": missing[:EXAMPLES],
    }


def _raw_counts(ds: Dataset, num_tags: int) -> tuple[NDArray[np.int64], int]:
    """Images per raw tag, recounted from the index (tag ids are unique per image), and images with no tag."""
    counts = np.zeros(num_tags, np.int64)
    no_tags = 0
    for off, ids in _chunks(ds, CHUNK_IMAGES):
        if ids.size and (ids.min() < 0 or ids.max() >= num_tags):
            raise fmt.FormatError(f"{ds.root}: tag index holds tag ids outside the {num_tags} rows of {fmt.TAGS}")
        counts += np.bincount(ids, minlength=num_tags)
        no_tags += int(np.count_nonzero(np.diff(off) == 0))
    return counts, no_tags


def _labels(ds: Dataset, tag_class: NDArray[np.int64], num_classes: int) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Per-image class labels as a CSR over all images (sorted unique class ids per image)."""
    offsets_parts, label_parts, base = [np.zeros(1, np.int64)], [np.zeros(0, np.int32)], 0
    for off, ids in _chunks(ds, CHUNK_IMAGES):
        image, cls = _image_classes(off, ids, tag_class, num_classes)
        offsets_parts.append(base + np.cumsum(np.bincount(image, minlength=off.shape[0] - 1)))
        label_parts.append(cls.astype(np.int32))
        base += int(cls.shape[0])
    return np.concatenate(offsets_parts), np.concatenate(label_parts)


def _saved_options(options: VocabOptions) -> dict:
    """The options as written into vocab.json: absolute paths, and the list files' sha256."""
    saved = asdict(options)
    for key in ("synonyms", "wordnet", "stoplist", "keep"):
        if saved[key] is not None:
            saved[key] = str(Path(saved[key]).resolve())
            if key != "wordnet":
                saved[f"{key}_sha256"] = file_digest(saved[key])
    return saved


def build_vocab(root: str | Path, name: str, options: VocabOptions, *, force: bool = False) -> VocabResult:
    """Build and write vocab/NAME/ of the dataset at root; returns where and the report. Shards are not read."""
    fmt.check_name(name, "vocabulary")  # fullmatch: `vocab --name $'v\n'` was accepted
    ds = Dataset(root)
    staged = stage_vocab(ds, name, replace=force)  # a second builder of NAME stops here, before the passes
    try:
        return _build(ds, name, options, staged)
    finally:
        staged.close()


def _build(ds: Dataset, name: str, options: VocabOptions, staged: Staged) -> VocabResult:
    # every input is read before the passes over the index, so a bad line fails fast
    synonyms = read_synonyms(options.synonyms) if options.synonyms else []
    stop = read_taglist(options.stoplist, what="stoplist") if options.stoplist else None
    keep = read_taglist(options.keep, what="keep") if options.keep else None
    wn = WordNet(options.wordnet) if options.wordnet else None

    rows = ds.tags
    num_tags = max((r[0] for r in rows), default=-1) + 1
    texts = [""] * num_tags
    for tid, text, _ in rows:
        texts[tid] = text
    raw_counts, no_tags = _raw_counts(ds, num_tags)
    present = raw_counts > 0  # a row of tags.tsv that no image carries forms no class
    tag_ids = np.flatnonzero(present)
    report: dict = {
        "order": list(ORDER),
        "images": ds.num_images,
        "images_without_tags": no_tags,
        "raw_tags": len(rows),
        "raw_tags_without_images": len(rows) - tag_ids.shape[0],
    }
    drops = _Drops()
    drops.tags("no_images", report["raw_tags_without_images"])

    by_text: dict[str, list[int]] = {}
    for tid in tag_ids.tolist():
        by_text.setdefault(canonical_tag(texts[tid]), []).append(tid)
    syn_key, unmatched = synonym_keys(synonyms, by_text, num_tags)
    if options.synonyms:
        report["synonyms"] = {"lines": len(synonyms), "words_not_in_dataset": unmatched}
    wn_key = np.full(num_tags, -1, np.int64)
    if wn is not None:
        wn_key, report["wordnet"] = wordnet_keys(wn, texts, tag_ids, num_tags)
    cands, report["tags_merged"] = merge(texts, raw_counts, present, syn_key, wn_key, synonyms)
    if wn is not None:
        report["wordnet"]["merged_examples"] = wordnet_examples(cands, texts, wn_key, wn)

    if stop is not None:
        report["stoplist"] = {"entries": len(stop)}
        _apply_stoplist(cands, texts, stop, drops)
    if keep is not None:
        report["keep"] = _apply_keep(cands, texts, keep, drops)

    # image counts of the candidate classes (a pass over the index), then min-count and top-K
    roots = sorted(cands.members)
    tag_class = np.full(num_tags, -1, np.int64)
    tag_class[[t for r in roots for t in cands.members[r]]] = np.repeat(
        np.arange(len(roots)), [len(cands.members[r]) for r in roots]
    )
    image_counts = np.zeros(len(roots), np.int64)
    for off, ids in _chunks(ds, CHUNK_IMAGES):
        image_counts += np.bincount(_image_classes(off, ids, tag_class, len(roots))[1], minlength=len(roots))
    counts = image_counts.tolist()
    final: list[int] = []
    for j in sorted(range(len(roots)), key=lambda j: (-counts[j], cands.names[roots[j]])):
        if counts[j] < options.min_count:
            drops.drop("min_count", cands, roots[j])
        elif options.top is not None and len(final) >= options.top:
            drops.drop("top_k", cands, roots[j])
        else:
            final.append(j)
    report["dropped"] = drops.table

    # class ids by descending count then name (the order of `final`), then the labels (a second pass)
    new_id = np.full(len(roots) + 1, -1, np.int64)  # the extra last entry maps tag_class -1 to -1
    new_id[final] = np.arange(len(final))
    classes = [
        VocabClass(i, cands.names[roots[j]], counts[j], tuple(texts[t] for t in cands.members[roots[j]]))
        for i, j in enumerate(final)
    ]
    label_offsets, labels = _labels(ds, new_id[tag_class], len(final))

    report["classes"] = len(final)
    report["tags_in_classes"] = sum(len(c.members) for c in classes)
    report["labels"] = int(labels.shape[0])
    report["images_without_class"] = int(np.count_nonzero(np.diff(label_offsets) == 0))
    report["top_classes"] = [[c.name, c.count] for c in classes[:EXAMPLES]]
    path = write_vocab(ds, name, classes, label_offsets, labels, _saved_options(options), report, staged=staged)
    return VocabResult(path, report)


def format_report(report: dict) -> str:
    """The report as a few human lines (the full report is report.json)."""
    merged = report["tags_merged"]
    lines = [
        f"classes: {report['classes']}  (from {report['raw_tags']} raw tags; {report['tags_in_classes']} tags in classes)",
        f"tags merged: {merged['total']}  (synonyms {merged['synonyms']}, WordNet {merged['wordnet']})",
    ]
    if "wordnet" in report:
        w = report["wordnet"]
        lines.append(
            f"WordNet: {w['tags_matched']} tags matched a noun synset ({w['matched_first_of_several_senses']} took the first of several senses)"
        )
    for reason, entry in report["dropped"].items():
        if entry["tags"] or entry["classes"]:
            examples = ", ".join(entry["examples"])
            lines.append(
                f"dropped by {reason}: {entry['classes']} classes, {entry['tags']} tags"
                + (f"  (e.g. {examples})" if examples else "")
            )
    if "keep" in report and report["keep"]["entries_unmatched"]:
        k = report["keep"]
        lines.append(
            f"keep list: {k['entries_unmatched']} of {k['entries']} entries match no tag (e.g. {', '.join(k['unmatched_examples'])})"
        )
    lines.append(
        f"images: {report['images']}, with no class: {report['images_without_class']} "
        f"(of which {report['images_without_tags']} have no tag at all)"
    )
    if report["top_classes"]:
        lines.append("top classes: " + ", ".join(f"{n} ({c})" for n, c in report["top_classes"]))
    return "\n".join(lines)  # tags are user data: the CLI boundary neutralises terminal controls
