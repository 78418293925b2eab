"""`tagstream verify`: recompute every shard checksum and check every record; name each damaged shard.

Streaming: each shard is read once for its checksum (4 MiB blocks) and once for its records, so memory
stays flat for any dataset size. A shard whose size, LMDB meta page or checksum fails is not opened with
LMDB at all, and the record pass runs in a child process (tools/verify/records.py): LMDB trusts its page
pointers, and a damaged file must be reported, never crash `verify`. `deep=True` also checks every
image (header, size against the index, every scan decodable). Vocabularies and masks are checked entry by
entry (what opening them at run time skips to stay O(1)); the index, tags, vocabularies and masks against their
checksums (tools/verify/sums.py). `workers` > 1 checks that many shards at once, in processes (one shard's
checksum and record pass stay in one process: the work is per shard, and hashing is CPU-bound).
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagstream.loader.data import format as fmt
from tagstream.loader.data import read_manifest
from tagstream.tools.verify.records import check_records
from tagstream.tools.verify.sums import checksum_problems


@dataclass(frozen=True)
class Problem:
    shard: str | None  # shard name, or None for dataset-level files
    what: str

    def __str__(self) -> str:
        return f"shard {self.shard}: {self.what}" if self.shard is not None else self.what


@dataclass
class VerifyReport:
    root: str
    shards: int = 0
    images: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be checked (no checksum recorded), not faults

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def damaged_shards(self) -> list[str]:
        return sorted({p.shard for p in self.problems if p.shard is not None})


def _read_tags(root: Path) -> tuple[int | None, str | None]:
    path = root / fmt.TAGS
    if not path.exists():
        return None, f"missing {fmt.TAGS}"
    n = 0
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if lineno == 1 and line.startswith("id\t"):
                    continue
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 3 or not parts[0].isdigit() or int(parts[0]) != n or not parts[2].isdigit():
                    return None, f"{fmt.TAGS} line {lineno} is not 'id<TAB>tag<TAB>count' with ids 0, 1, 2, ..."
                n += 1
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{fmt.TAGS} is unreadable ({type(exc).__name__}: {exc})"
    return n, None


def _check_index(root: Path, name: str, images: int) -> tuple[dict[str, np.ndarray], list[str]]:
    arrays, problems = {}, []
    for array, dtype in {**fmt.INDEX_ARRAYS, **fmt.OPTIONAL_INDEX_ARRAYS}.items():
        path = fmt.index_path(root, name, array)
        if not path.exists():
            if array in fmt.INDEX_ARRAYS:  # an optional one is absent from datasets written before it
                problems.append(f"missing index file {path.name}")
            continue
        try:
            a = np.load(path, mmap_mode="r")
        except Exception as exc:  # numpy raises ValueError/OSError/EOFError on truncated or garbled .npy
            problems.append(f"index file {path.name} is unreadable ({type(exc).__name__}: {exc})")
            continue
        if a.dtype != np.dtype(dtype) or a.ndim != 1:
            problems.append(f"index file {path.name} has dtype {a.dtype} shape {a.shape}, expected 1-d {dtype}")
            continue
        arrays[array] = a
    for array in ("width", "height", "phash", *fmt.OPTIONAL_INDEX_ARRAYS):
        if array in arrays and len(arrays[array]) != images:
            problems.append(
                f"count mismatch: index {array} has {len(arrays[array])} entries, manifest says {images} images"
            )
            del arrays[array]
    if "width" in arrays and "height" in arrays:
        try:
            fmt.check_image_sizes(arrays["width"], arrays["height"], "index")
        except fmt.FormatError as exc:
            problems.append(str(exc))
    if {"content_box", "width", "height"} <= set(arrays):
        box = fmt.unpack_boxes(arrays["content_box"])
        bad = (box[:, 0] >= box[:, 2]) | (box[:, 1] >= box[:, 3]) | (box[:, 2] > arrays["width"])
        bad |= box[:, 3] > arrays["height"]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            problems.append(f"index content_box of image {i} is {box[i].tolist()}, not inside its frame")
    if "tag_offsets" in arrays:
        off = arrays["tag_offsets"]
        if len(off) != images + 1:
            problems.append(f"count mismatch: index tag_offsets has {len(off)} entries, expected {images + 1}")
        elif off[0] != 0 or np.any(np.diff(off) < 0) or ("tag_ids" in arrays and off[-1] != len(arrays["tag_ids"])):
            problems.append("index tag_offsets is not a valid CSR over tag_ids")
    return arrays, problems


def verify(root: str | Path, *, deep: bool = False, workers: int = 1) -> VerifyReport:
    """Check a dataset end to end; never raises on damage, every fault becomes a Problem. deep: also
    check every image (header, size against the index, every scan decodable); workers: shards checked at once."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers={workers!r}: must be an integer >= 1")
    root = Path(root)
    report = VerifyReport(str(root))
    try:
        manifest = read_manifest(root)
    except fmt.FormatError as exc:
        report.problems.append(Problem(None, str(exc)))
        return report
    num_tags, tag_problem = _read_tags(root)
    if tag_problem:
        report.problems.append(Problem(None, tag_problem))
    elif num_tags != manifest.get("tags", num_tags):
        report.problems.append(Problem(None, f"{fmt.TAGS} has {num_tags} tags, manifest says {manifest['tags']}"))
    shards = manifest["shards"]
    held = sum(s["images"] for s in shards)
    if held != manifest["images"]:
        report.problems.append(
            Problem(None, f"count mismatch: manifest says {manifest['images']} images, its shards hold {held}")
        )
    jobs = [(root, s, num_tags, deep) for s in shards]
    many = workers > 1 and len(jobs) > 1
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("fork")) if many else nullcontext()
    with pool:
        for s, (problems, nbytes, nimages) in zip(shards, pool.map(_shard, jobs) if many else map(_shard, jobs)):
            report.shards += 1
            report.bytes += nbytes
            report.images += nimages
            report.problems.extend(Problem(s["name"], what) for what in problems)
    if held == manifest["images"]:
        report.problems.extend(Problem(None, what) for what in _check_vocabs_and_masks(root, held))
    try:
        problems, report.notes = checksum_problems(root, manifest)
    except OSError as exc:  # an unreadable folder or file: a fault to report, never a crash
        problems = [(None, f"checksums could not be checked: {type(exc).__name__}: {exc}")]
    report.problems.extend(Problem(shard, what) for shard, what in problems)
    return report


def _shard(job: tuple) -> tuple[list[str], int, int]:
    """(problems, bytes checksummed, images verified) of one shard."""
    root, s, num_tags, deep = job
    counts = VerifyReport(str(root))
    problems = _check_shard(root, s, num_tags, deep, counts)
    return problems, counts.bytes, counts.images


def _check_shard(root: Path, s: dict, num_tags: int | None, deep: bool, report: VerifyReport) -> list[str]:
    name, images = s["name"], s["images"]
    data = fmt.shard_path(root, name) / "data.mdb"
    arrays, problems = _check_index(root, name, images)
    if not data.exists():
        return problems + [f"missing shard: {data} does not exist"]
    size = data.stat().st_size
    if "bytes" not in s:
        return problems + ["the manifest gives no byte size or checksum of the shard"]
    if size != s["bytes"]:
        return problems + [f"truncated or resized file: data.mdb has {size} bytes, manifest says {s['bytes']}"]
    digest = fmt.file_sha256(data)
    report.bytes += size
    if digest != s.get("sha256"):
        return problems + [
            f"checksum mismatch (damaged bytes): sha256 {digest[:16]}..., manifest says {str(s.get('sha256'))[:16]}..."
        ]
    lmdb_problem = fmt.lmdb_file_problem(data)
    if lmdb_problem:
        return problems + [f"data.mdb {lmdb_problem}"]
    problems += check_records(root, name, images, arrays, num_tags, deep)
    if not problems:
        report.images += images
    return problems


def _check_vocabs_and_masks(root: Path, images: int) -> list[str]:
    """Every vocabulary's class table and label CSR entry by entry (the table's counts against the labels), every
    mask's shape and dtype."""
    from tagstream.loader.data import CLASSES, Dataset, Vocab, load_npy, read_classes

    problems = []
    ds = Dataset(root)
    for name in ds.vocab_names():
        try:
            vocab = Vocab(ds, name)
            table = read_classes(vocab.dir / CLASSES, vocab.num_classes)
            counts = _label_counts(vocab.label_offsets, vocab.labels, vocab.num_classes)
            if counts is None:
                problems.append(f"vocabulary {name}: labels are not a CSR of class ids in [0, {vocab.num_classes})")
            elif vocab.meta.get("images") not in (None, images):
                problems.append(f"vocabulary {name}: vocab.json says {vocab.meta['images']!r:.40} images, not {images}")
            else:
                wrong = [c for c in table if c.count != counts[c.id]]
                if wrong:
                    c = wrong[0]
                    problems.append(
                        f"vocabulary {name}: {len(wrong)} class count(s) in {CLASSES} differ from the labels "
                        f"(class {c.id}: {c.count} there, {counts[c.id]} images labelled)"
                    )
        except (fmt.FormatError, ValueError) as exc:
            problems.append(f"vocabulary {name}: {exc}")
    d = root / fmt.MASKS_DIR
    for path in sorted(p for p in d.glob("*.npy") if not p.name.startswith(".")) if d.exists() else []:
        try:
            mask = load_npy(path)
            if mask.shape != (images,) or mask.dtype != np.bool_:
                problems.append(f"mask {path.name}: {mask.dtype} {mask.shape}, expected bool ({images},)")
        except fmt.FormatError as exc:
            problems.append(f"mask {path.name}: {exc}")
    return problems


def _label_counts(offsets: np.ndarray, labels: np.ndarray, classes: int, chunk: int = 1 << 22) -> np.ndarray | None:
    """Images per class, or None unless the offsets never decrease and every label is in [0, classes); in chunks
    (memory stays flat)."""
    for lo in range(0, max(offsets.shape[0] - 1, 0), chunk):
        if np.any(np.diff(offsets[lo : lo + chunk + 1]) < 0):
            return None
    counts = np.zeros(classes, np.int64)
    for lo in range(0, labels.shape[0], chunk):
        part = labels[lo : lo + chunk]
        if part.min() < 0 or part.max() >= classes:
            return None
        counts += np.bincount(part, minlength=classes)
    return counts
