"""Publish a dataset directory to object storage (`tagstream push DS URL`), the writer beside loader/remote.py.

Order is what makes it safe: an old manifest at the URL is deleted first, then every other file is
uploaded, their sizes are checked by listing the URL, objects of an earlier version that this one
does not have are deleted, and the manifest is uploaded last. A reader
(loader/remote.py opens the manifest first) therefore never sees a manifest whose shards are not all
there; an interrupted push leaves no manifest, so it reads as "upload not finished", and is run again.
Only data.mdb of each shard is uploaded (readers open shards lock-free); conversion state (.convert/),
per-machine caches (vocab/NAME/sampling/) and lock files stay local.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tagstream.loader import format as fmt
from tagstream.loader import storage
from tagstream.loader.remote import LOCAL_ONLY

THREADS = 4


@dataclass(frozen=True)
class PushReport:
    url: str
    files: int
    bytes: int
    removed: int  # objects of an earlier version deleted
    seconds: float


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
        raise fmt.FormatError(f"{root}: {len(missing)} file(s) named by the manifest are missing, e.g. {missing[0]}; run `tagstream verify`")
    return rels


def push(root: str | Path, url: str, *, retry: storage.Retry = storage.DEFAULT_RETRY, threads: int = THREADS) -> PushReport:
    """Upload the dataset at root to url (see the module docstring for the order); returns what was sent."""
    root = Path(root)
    if not storage.is_url(url):
        raise ValueError(f"push needs a URL such as s3://bucket/name or gs://bucket/name, got {url!r}")
    url = url.rstrip("/")
    rels = files_to_push(root)
    sizes = {rel: (root / rel).stat().st_size for rel in rels}
    t0 = time.monotonic()
    storage.remove(storage.join(url, fmt.MANIFEST), retry)  # readers stop trusting the old version first
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(lambda rel: storage.put(root / rel, storage.join(url, rel), retry), rels):
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
    return PushReport(url=storage.redact(url), files=len(rels) + 1, bytes=total, removed=len(stale),
                      seconds=round(time.monotonic() - t0, 3))
