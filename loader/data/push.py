"""Publish a dataset directory to object storage (`tagstream push DS URL`), the writer beside loader/data/cache.py.

It never touches what it did not write. What is "ours" at the URL: the objects a ledger at the URL
(push.json, written by every push before it uploads anything) names, those this dataset's journal
(.push/) recorded uploading there, and the files an earlier tagstream manifest there names. Every other
object under the prefix is foreign: left alone and reported. A prefix holding objects but no ledger, no
tagstream manifest and no journal entry is someone else's: push refuses it unless `replace_foreign`
(then objects of the dataset's names are overwritten; the others are still left alone).

Order is what makes it safe for readers: the ledger is widened to everything this push may write, an
old manifest at the URL is deleted, then every other file is uploaded, their sizes are checked by
listing the URL, our objects of an earlier version that this one does not have are deleted, the ledger
is narrowed to this version, and the manifest is uploaded last. A reader (loader/data/cache.py opens the
manifest first) therefore never sees a manifest whose shards are not all there; an interrupted push
leaves no manifest, so it reads as "upload not finished", and is run again.
A rerun uploads only what it must: the journal (one per URL, a line per finished upload: the local
file's size and mtime, the object's version at the URL) lets it skip a file that has not changed here
since it was uploaded and whose object has not been replaced there since (ETag or generation). What
the journal cannot vouch for is uploaded again.
Only data.mdb of each shard is uploaded (readers open shards lock-free); conversion state (.convert/),
per-machine caches (vocab/NAME/sampling/), lock files and the staging folders of builds in progress
(vocab/.NAME.PID.tmp/, masks/.NAME.PID.tmp/) stay local.
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
from tagstream.loader.data.manifest import read_manifest
from tagstream.loader.data.remote_keys import key_problem
from tagstream.loader.data.staging import in_staging

THREADS = 4
LEDGER = "push.json"  # at the URL: every object a tagstream push of this dataset may have written there
JOURNAL_DIR = ".push"  # in the dataset, never uploaded


@dataclass(frozen=True)
class PushReport:
    url: str
    files: int
    bytes: int
    removed: int  # our objects of an earlier version deleted
    seconds: float
    skipped: int = 0  # files already there from an earlier (interrupted) push of the same bytes
    skipped_bytes: int = 0
    foreign: tuple[str, ...] = ()  # objects under the prefix that no tagstream push wrote: left alone


class ForeignPrefix(ValueError):
    """The URL holds objects no tagstream push wrote, and replace_foreign was not given."""


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
    manifest = read_manifest(root)
    rels = [f"{fmt.SHARDS_DIR}/{s['name']}.lmdb/data.mdb" for s in manifest["shards"]]
    for sub in (fmt.INDEX_DIR, fmt.VOCAB_DIR, fmt.MASKS_DIR):
        for path in sorted((root / sub).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not LOCAL_ONLY.search(rel) and ".tmp" not in path.name and not in_staging(rel):
                rels.append(rel)
    rels += [name for name in (fmt.TAGS, fmt.REJECTS) if (root / name).is_file()]
    missing = [rel for rel in rels if not (root / rel).is_file()]
    if missing:
        raise fmt.FormatError(
            f"{root}: {len(missing)} file(s) named by the manifest are missing, e.g. {missing[0]}; run `tagstream verify`"
        )
    return rels


def _remote_json(url: str, rel: str, there: dict[str, str], retry: storage.Retry) -> object:
    """The JSON object at url/rel when listed there, else None; bytes that do not parse are None as well."""
    if rel not in there:
        return None
    try:
        return json.loads(storage.read_bytes(storage.join(url, rel), retry))
    except FileNotFoundError:
        return None
    except (ValueError, RecursionError):
        return None


def written_by_tagstream(url: str, there: dict[str, str], journal: Journal, retry: storage.Retry) -> set[str]:
    """The objects under url that a tagstream push wrote, as far as the URL and this dataset can tell:
    the ledger's, the journal's, and the files a tagstream manifest there names (a push of an older
    tagstream wrote no ledger). Names read from the URL are data: only dataset-relative names count."""
    ours: set[str] = set(journal.done)
    ledger = _remote_json(url, LEDGER, there, retry)
    if isinstance(ledger, dict) and isinstance(ledger.get("objects"), list):
        ours.update(r for r in ledger["objects"] if isinstance(r, str))
        ours.add(LEDGER)
    manifest = _remote_json(url, fmt.MANIFEST, there, retry)
    if isinstance(manifest, dict) and manifest.get("format") == fmt.FORMAT_NAME:
        ours.update({fmt.MANIFEST, fmt.TAGS, fmt.REJECTS})
        for entry in manifest.get("shards") if isinstance(manifest.get("shards"), list) else []:
            name = entry.get("name") if isinstance(entry, dict) else None
            if isinstance(name, str) and fmt.NAME_PATTERN.fullmatch(name):
                ours.add(f"{fmt.SHARDS_DIR}/{name}.lmdb/data.mdb")
                ours.update(
                    fmt.index_path(Path(), name, a).as_posix() for a in (*fmt.INDEX_ARRAYS, *fmt.OPTIONAL_INDEX_ARRAYS)
                )
    return {rel for rel in ours & set(there) if key_problem(rel) is None}


def _write_ledger(url: str, objects: set[str], retry: storage.Retry) -> None:
    body = {"format": "tagstream-push", "objects": sorted(objects)}
    storage.put_bytes(json.dumps(body, indent=1).encode(), storage.join(url, LEDGER), retry)


def push(
    root: str | Path,
    url: str,
    *,
    retry: storage.Retry = storage.DEFAULT_RETRY,
    threads: int = THREADS,
    replace_foreign: bool = False,
) -> PushReport:
    """Upload the dataset at root to url (see the module docstring for what it touches and in which order);
    returns what was sent and the foreign objects it left alone. ForeignPrefix when url holds only objects
    no tagstream push wrote and replace_foreign is False."""
    root = Path(root)
    if not storage.is_url(url):
        raise ValueError(f"push needs a URL such as s3://bucket/name or gs://bucket/name, got {url!r}")
    url = url.rstrip("/")
    rels = files_to_push(root)
    stats = {rel: (root / rel).stat() for rel in rels}
    sizes = {rel: st.st_size for rel, st in stats.items()}
    t0 = time.monotonic()
    journal = Journal(root, url)
    before = storage.list_versions(url, retry)
    ours = written_by_tagstream(url, before, journal, retry)
    names = set(rels) | {fmt.MANIFEST, LEDGER}
    if before and not ours and not replace_foreign:
        example = sorted(before)[0]
        raise ForeignPrefix(
            f"{storage.redact(url)} holds {len(before)} object(s) that no tagstream push wrote (e.g. {example}); "
            "push writes nothing among them: choose an empty prefix, or pass --replace-foreign to write the "
            "dataset there anyway (objects of its file names are overwritten, every other one is left alone)"
        )
    _write_ledger(url, (ours | set(rels)) - {LEDGER}, retry)  # first: a crash from here on leaves them ours
    if fmt.MANIFEST in ours or replace_foreign:
        storage.remove(storage.join(url, fmt.MANIFEST), retry)  # readers stop trusting the old version first
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
    stale = sorted((ours & set(there)) - names)  # ours, of an earlier version: a reader must not find them
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(lambda rel: storage.remove(storage.join(url, rel), retry), stale):
            pass
    _write_ledger(url, set(rels), retry)
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
        foreign=tuple(sorted(set(there) - ours - names)),
    )
