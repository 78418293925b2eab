"""Read a vocabulary of a dataset: the class table and per-image class labels (CSR, memory-mapped)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data import checksums
from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset, load_npy

CLASSES = "classes.tsv"
LABEL_OFFSETS = "label_offsets.npy"
LABELS = "labels.npy"
META = "vocab.json"
REPORT = "report.json"


@dataclass(frozen=True)
class VocabClass:
    id: int
    name: str
    count: int
    members: tuple[str, ...]


class Vocab:
    """vocab/NAME/ of a dataset. label_offsets (N+1, int64) and labels (int32) form a CSR."""

    def __init__(self, dataset: Dataset, name: str):
        self.dataset = dataset
        self.name = name
        self.dir = dataset.vocab_dir(name)
        if not (self.dir / META).exists():
            known = dataset.vocab_names()
            raise ValueError(
                f"{dataset.root}: no vocabulary {name!r} (vocabularies here: {', '.join(known) or 'none'}; "
                f"build one with `tagstream vocab {dataset.root} --name {name}`)"
            )
        try:
            self.meta = json.loads((self.dir / META).read_bytes().decode("utf-8"))
        except ValueError as exc:
            raise fmt.FormatError(f"{self.dir / META}: not valid JSON: {exc}") from None
        if not isinstance(self.meta, dict) or not isinstance(self.meta.get("classes"), int) or self.meta["classes"] < 0:
            raise fmt.FormatError(f"{self.dir / META}: expected an object with a non-negative integer 'classes'")
        self.num_classes = int(self.meta["classes"])
        if dataset.verify:  # the vocabulary's files against its checksums.json (none: built by an older tagstream)
            for file, entry in (checksums.read_sums(self.dir / checksums.VOCAB_SUMS) or {}).items():
                dataset.check_file(self.dir / file, entry, f"vocabulary {name}: {file}")
        self.label_offsets: NDArray[np.int64] = load_npy(self.dir / LABEL_OFFSETS)
        self.labels: NDArray[np.int32] = load_npy(self.dir / LABELS)
        if self.label_offsets.shape != (dataset.num_images + 1,) or self.label_offsets.dtype != np.dtype("<i8"):
            raise fmt.FormatError(
                f"{self.dir}: {LABEL_OFFSETS} is {self.label_offsets.dtype} {self.label_offsets.shape}, "
                f"expected int64 ({dataset.num_images + 1},) for a dataset of {dataset.num_images} images"
            )
        self._check_labels()

    def _check_labels(self) -> None:
        """O(1) checks of the label CSR (dtypes, both ends): opening stays independent of the image count;
        `tagstream verify` checks every entry."""
        off, labels = self.label_offsets, self.labels
        if labels.dtype != np.dtype("<i4") or labels.ndim != 1:
            raise fmt.FormatError(f"{self.dir / LABELS}: {labels.dtype} {labels.shape}, expected 1-d int32")
        if off[0] != 0 or off[-1] != labels.shape[0]:
            raise fmt.FormatError(f"{self.dir}: {LABEL_OFFSETS} is not a CSR over {LABELS} ({labels.shape[0]} entries)")

    def classes(self) -> list[VocabClass]:
        rows = []
        with open(self.dir / CLASSES, encoding="utf-8") as f:
            for line in f:
                if not line.strip() or line.startswith("id\t"):
                    continue
                cid, name, count, members = line.rstrip("\n").split("\t")
                rows.append(VocabClass(int(cid), name, int(count), tuple(members.split())))
        return rows

    def class_names(self) -> list[str]:
        return [c.name for c in self.classes()]


def write_vocab(
    dataset: Dataset,
    name: str,
    classes: list[VocabClass],
    label_offsets: NDArray[np.int64],
    labels: NDArray[np.int32],
    options: dict,
    report: dict,
) -> Path:
    """Write vocab/NAME/ (arrays and tables first, then their checksums.json, vocab.json last, so a crash leaves
    no valid-looking vocab)."""
    d = dataset.vocab_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    meta = d / META
    if meta.exists():
        meta.unlink()
    fmt.save_npy_atomic(d / LABEL_OFFSETS, np.ascontiguousarray(label_offsets, dtype="<i8"))
    fmt.save_npy_atomic(d / LABELS, np.ascontiguousarray(labels, dtype="<i4"))
    tmp = d / (CLASSES + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("id\tname\tcount\tmembers\n")
        for c in classes:
            f.write(f"{c.id}\t{c.name}\t{c.count}\t{' '.join(c.members)}\n")
    tmp.replace(d / CLASSES)
    fmt.write_json_atomic(d / REPORT, report)
    meta_text = fmt.json_text({"name": name, "classes": len(classes), "images": dataset.num_images, "options": options})
    sums = {f: checksums.entry_of_file(d / f) for f in (LABEL_OFFSETS, LABELS, CLASSES, REPORT)}
    checksums.write_vocab_sums(d, {**sums, META: checksums.entry_of(meta_text.encode("utf-8"))})
    fmt.write_text_atomic(meta, meta_text)
    return d
