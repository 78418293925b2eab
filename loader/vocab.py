"""Read a vocabulary of a dataset: the class table and per-image class labels (CSR, memory-mapped)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tagstream.loader import format as fmt
from tagstream.loader.dataset import Dataset

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
        self.meta = json.loads((self.dir / META).read_text())
        self.label_offsets: NDArray[np.int64] = np.load(self.dir / LABEL_OFFSETS, mmap_mode="r")
        self.labels: NDArray[np.int32] = np.load(self.dir / LABELS, mmap_mode="r")
        if self.label_offsets.shape != (dataset.num_images + 1,):
            raise fmt.FormatError(
                f"{self.dir}: labels cover {self.label_offsets.shape[0] - 1} images, dataset has {dataset.num_images}"
            )
        self.num_classes = int(self.meta["classes"])

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
    """Write vocab/NAME/ (arrays and tables first, vocab.json last, so a crash leaves no valid-looking vocab)."""
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
    fmt.write_json_atomic(meta, {"name": name, "classes": len(classes), "images": dataset.num_images, "options": options})
    return d
