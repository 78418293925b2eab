"""Read a vocabulary of a dataset: the class table and per-image class labels (CSR, memory-mapped)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data import checksums
from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset, load_npy
from tagstream.loader.data.staging import Staged

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
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
            raise fmt.FormatError(f"{self.dir / META}: not valid JSON: {str(exc)[:200]}") from None
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
        return read_classes(self.dir / CLASSES, self.num_classes)

    def class_names(self) -> list[str]:
        return [c.name for c in self.classes()]


_ROW = re.compile(r"([0-9]{1,18})\t([^\t]+)\t([0-9]{1,18})\t([^\t]*)\n")
HEADER = "id\tname\tcount\tmembers\n"


def read_classes(path: Path, num_classes: int) -> list[VocabClass]:
    """classes.tsv, strictly: the header, then one 'id<TAB>name<TAB>count<TAB>members' row per class, ids 0, 1, 2, ...
    and num_classes rows (vocab.json's count); a garbled, cut or short table is a FormatError naming the line."""
    rows: list[VocabClass] = []
    try:
        with open(path, encoding="utf-8", newline="\n") as f:
            if f.readline() != HEADER:
                raise fmt.FormatError(f"{path} line 1: not the header {HEADER.strip()!r}")
            for lineno, line in enumerate(f, start=2):
                m = _ROW.fullmatch(line)
                if m is None or int(m[1]) != len(rows):
                    why = (
                        "cut short (no line end)"
                        if not line.endswith("\n")
                        else "not 'id<TAB>name<TAB>count<TAB>members'"
                    )
                    raise fmt.FormatError(f"{path} line {lineno}: {why} with ids 0, 1, 2, ... in order")
                rows.append(VocabClass(len(rows), m[2], int(m[3]), tuple(m[4].split())))
    except (OSError, UnicodeDecodeError) as exc:
        raise fmt.FormatError(f"{path}: unreadable ({type(exc).__name__}: {str(exc)[:120]})") from None
    if len(rows) != num_classes:
        raise fmt.FormatError(f"{path}: {len(rows)} classes, but vocab.json says {num_classes}")
    return rows


def write_vocab(
    dataset: Dataset,
    name: str,
    classes: list[VocabClass],
    label_offsets: NDArray[np.int64],
    labels: NDArray[np.int32],
    options: dict,
    report: dict,
    *,
    staged: Staged | None = None,
) -> Path:
    """Write vocab/NAME/ through `staged` (its lock taken when the build began; default: one taken now, replacing
    an older NAME): the files go to a temporary folder renamed into place when whole, so a reader sees the old
    vocabulary or the new one, and two concurrent builders never mix their files; the folder's checksums.json covers
    every file."""
    staged = staged or stage_vocab(dataset, name, replace=True)
    with staged as d:
        fmt.save_npy_atomic(d / LABEL_OFFSETS, np.ascontiguousarray(label_offsets, dtype="<i8"))
        fmt.save_npy_atomic(d / LABELS, np.ascontiguousarray(labels, dtype="<i4"))
        fmt.write_text_atomic(
            d / CLASSES, [HEADER, *(f"{c.id}\t{c.name}\t{c.count}\t{' '.join(c.members)}\n" for c in classes)]
        )
        fmt.write_json_atomic(d / REPORT, report)
        meta = {"name": name, "classes": len(classes), "images": dataset.num_images, "options": options}
        meta_text = fmt.json_text(meta)
        sums = {f: checksums.entry_of_file(d / f) for f in (LABEL_OFFSETS, LABELS, CLASSES, REPORT)}
        checksums.write_vocab_sums(d, {**sums, META: checksums.entry_of(meta_text.encode("utf-8"))})
        fmt.write_text_atomic(d / META, meta_text)
    return dataset.vocab_dir(name)


def stage_vocab(dataset: Dataset, name: str, *, replace: bool) -> Staged:
    """The exclusive build of vocab/NAME/ (loader/data/staging.py): refuses at once when another process builds NAME,
    or, without `replace`, when NAME exists."""
    return Staged(
        dataset.root / fmt.VOCAB_DIR,
        fmt.check_name(name, "vocabulary"),
        what="vocabulary",
        marker=f"{name}/{META}",
        replace=replace,
        advice="choose another --name or pass --force",
    )
