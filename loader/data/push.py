"""Publish a dataset directory to object storage (`tagstream push DS URL`), the writer beside loader/data/cache.py.

Order is what makes it safe: an old manifest at the URL is deleted first, then every other file is
uploaded, their sizes are checked by listing the URL, objects of an earlier version that this one
does not have are deleted, and the manifest is uploaded last. A reader
(loader/data/cache.py opens the manifest first) therefore never sees a manifest whose shards are not all
there; an interrupted push leaves no manifest, so it reads as "upload not finished", and is run again.
A rerun uploads only what it must: a journal beside the dataset (.push/, one per URL, a line per finished
upload: the local file's size and mtime, the object's version at the URL) lets it skip a file that has
not changed here since it was uploaded and whose object has not been replaced there since (ETag or
generation). What the journal cannot vouch for is uploaded again.
Only data.mdb of each shard is uploaded (readers open shards lock-free); conversion state (.convert/),
per-machine caches (vocab/NAME/sampling/) and lock files stay local.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tagstream.loader.data import format as fmt
from tagstream.loader.data import storage
from tagstream.loader.data.cache import LOCAL_ONLY

THREADS = 4


@dataclass(frozen=True)
class PushReport:
    url: str
    files: int
    bytes: int
    removed: int  # objects of an earlier version deleted
    seconds: float
    skipped: int = 0  # files already there from an earlier (interrupted) push of the same bytes
    skipped_bytes: int = 0


JOURNAL_DIR = ".push"  # in the dataset, never uploaded


class Journal:
    """What earlier pushes of this dataset to one URL finished: rel -> (local stamp, object version)."""

    def __init__(self, root: Path, url: str):
        self.path = root / JOURNAL_DIR / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".jsonl")
        self.done: dict[str, tuple[str, str]] = {}
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:  # the last line of a rel wins; a line cut by a crash is ignored
            try:
                row = json.loads(line)
                self.done[row["rel"]] = (row["local"], row["remote"])
            except (ValueError, KeyError, TypeError):
                continue

    def record(self, rel: str, local: str, remote: str) -> None:
        self.path.parent.mkdir(exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"rel": rel, "local": local, "remote": remote}) + "\n")


def local_stamp(st: os.stat_result) -> str:
    """A local file's journal stamp: its size and modification time."""
    return f"{st.st_size}:{st.st_mtime_ns}"


def files_to_push(root: Path) -> list[str]:
    """Relative paths of what a reader needs, manifest excluded (it goes last)."""
    root = Path(root)
    manifest = fmt.read_manifest(root)
    rels = [f"{fmt.SHARDS_DIR}/{s['name']}.lmdb/data.mdb" for s in manifest["shards"]]
    for sub in (fmt.INDEX_DIR, fmt.VOCAB_DIR, fmt.MASKS_DIR):
        for path in sorted((root / sub).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not LOCAL_ONLY.search(rel) and ".tmp" not in path.name:
                rels.append(rel)
    rels += [name for name in (fmt.TAGS, fmt.REJECTS) if (root / name).is_file()]
    missing = [rel for rel in rels if not (root / rel).is_file()]
    if missing:
        raise fmt.FormatError(
            f"{root}: {len(missing)} file(s) named by the manifest are missing, e.g. {missing[0]}; run `tagstream verify`"
        )
    return rels


def push(
    root: str | Path, url: str, *, retry: storage.Retry = storage.DEFAULT_RETRY, threads: int = THREADS
) -> PushReport:
    """Upload the dataset at root to url (see the module docstring for the order); returns what was sent."""
    root = Path(root)
    if not storage.is_url(url):
        raise ValueError(f"push needs a URL such as s3://bucket/name or gs://bucket/name, got {url!r}")
    url = url.rstrip("/")
    rels = files_to_push(root)
    stats = {rel: (root / rel).stat() for rel in rels}
    sizes = {rel: st.st_size for rel, st in stats.items()}
    t0 = time.monotonic()
    journal = Journal(root, url)
    storage.remove(storage.join(url, fmt.MANIFEST), retry)  # readers stop trusting the old version first
    before = storage.list_versions(url, retry)
    stamps = {rel: local_stamp(st) for rel, st in stats.items()}
    fresh = [rel for rel in rels if rel not in before or journal.done.get(rel) != (stamps[rel], before[rel])]
    lock = threading.Lock()

    def upload(rel: str) -> None:
        target = storage.join(url, rel)
        storage.put(root / rel, target, retry)
        remote = storage.version(target, retry)
        with lock:
            journal.record(rel, stamps[rel], remote)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(upload, fresh):
            pass
    there = storage.list_versions(url, retry)
    wrong = [rel for rel in rels if there.get(rel, "").split(":", 1)[0] != str(sizes[rel])]
    if wrong:
        raise storage.StorageError(
            f"{storage.redact(url)}: {len(wrong)} uploaded object(s) missing or of another size, e.g. {wrong[0]}; "
            "the manifest was not uploaded, run the push again"
        )
    stale = sorted(set(there) - set(rels) - {fmt.MANIFEST})  # left by an earlier version: a reader must not find them
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(lambda rel: storage.remove(storage.join(url, rel), retry), stale):
            pass
    storage.put(root / fmt.MANIFEST, storage.join(url, fmt.MANIFEST), retry)
    total = sum(sizes.values()) + (root / fmt.MANIFEST).stat().st_size
    skipped = set(rels) - set(fresh)
    return PushReport(
        url=storage.redact(url),
        files=len(rels) + 1,
        bytes=total,
        removed=len(stale),
        seconds=round(time.monotonic() - t0, 3),
        skipped=len(skipped),
        skipped_bytes=sum(sizes[r] for r in skipped),
    )
