"""A dataset on object storage (an fsspec URL), mirrored into a local cache directory on first use.

    CACHE_DIR/NAME-HASH/               the mirror: an ordinary dataset directory that names its source
        .source.json                   {"url", "manifest_sha256", "files": {path: version}} (vocab/, masks/)
        manifest.json                  fetched at every open (one small GET): the source of truth
        tags.tsv index/ vocab/ masks/  small files, fetched whole on first use
        shards/NAME.lmdb/data.mdb      fetched on first use, or ahead of time (loader/data/prefetch.py)
        shards/NAME.lmdb/verified.json {"sha256", "bytes", "seconds", "by"}: written after the check, so a
                                       shard with it is a verified shard and a resumed run reuses it
        .locks/                        NAME.get (a record lock: one downloader per shard on a machine, the
                                       others wait), NAME.failed (the last give-up: a downloader that waited
                                       meanwhile gives up too, so a stalled server costs one retry budget),
                                       NAME.use (a shared flock while a loader reads the shard: never evicted
                                       then), open (one process refreshes the mirror at a time)

Every remote key becomes a local path through remote_keys.local_file. A shard is checked against the manifest's
size and sha256 before use (storage.get: a mismatch is
downloaded once more, then an error naming the object). A mirror is a directory any process can open
as a Dataset (a DALI worker does): missing files are fetched from the recorded URL. When the remote
manifest changes, files of the old version are dropped. Trade-off: the cache never holds part of a
shard, so `cache_limit` must hold all shards a rank samples from (it samples them all every epoch,
with replacement; streaming them through a smaller cache would download each many times per epoch).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import IO, Iterator

from tagstream.loader.data import checksums, storage
from tagstream.loader.data import format as fmt
from tagstream.loader.data.format import default_cache_dir, stamp_dir  # noqa: F401 - stamp_dir: part of the cache's names
from tagstream.loader.data.manifest import read_manifest
from tagstream.loader.data.remote_keys import key_problem, local_file

log = logging.getLogger(__name__)
SOURCE = ".source.json"
VERIFIED = "verified.json"
LOCKS = ".locks"
LISTED_DIRS = (fmt.VOCAB_DIR, fmt.MASKS_DIR)  # listed at open (names are not in the manifest); the rest is named by it
LOCAL_ONLY = re.compile(
    r"(^|/)(sampling/|[^/]*\.lock$)"
)  # per-machine caches and locks of a pushed dataset: not fetched


def mirror_dir(url: str, cache_dir: str | Path | None = None) -> Path:
    """Where a URL's mirror lives: CACHE_DIR/<last path part>-<12 hex of the URL's sha256>."""
    url = url.rstrip("/")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", url.rsplit("/", 1)[-1])[:40] or "dataset"
    return Path(cache_dir or default_cache_dir()) / f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


_LOCKS: dict[str, threading.Lock] = {}  # one thread lock per lock file, so one thread of a process at a time
_LOCKS_GUARD = threading.Lock()


def _fresh_locks_in_child() -> None:
    # a thread lock held by a parent thread at fork time would be held forever in the child
    global _LOCKS_GUARD
    _LOCKS.clear()
    _LOCKS_GUARD = threading.Lock()


os.register_at_fork(after_in_child=_fresh_locks_in_child)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[IO]:
    """Hold `path` exclusively on this machine: a thread lock within the process, a POSIX record lock
    (fcntl.lockf) across processes. Record locks belong to the process and are not inherited: a DALI
    worker forked while a thread downloads never shares the lock (a flock would be held by the worker's
    inherited descriptor for as long as it lives, and everyone else waiting on it would hang)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(str(path), threading.Lock())
    with lock, open(path, "a") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        yield f  # closing the file releases the lock (also when the process dies)


def _given_up(path: Path) -> dict | None:
    """A shard's failure record ({"error", "at"}: the last downloader that gave up on it), or None."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("at"), float) and isinstance(record.get("error"), str)
    return record if ok else None


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Mirror:
    """The local mirror of one remote dataset (see the module docstring for its layout)."""

    def __init__(self, root: Path, state: dict, retry: storage.Retry = storage.DEFAULT_RETRY):
        self.root = Path(root)
        self.url: str = state["url"]
        self.files: dict[str, str] = dict(state.get("files", {}))
        self.retry = retry
        self._in_use: dict[str, IO] = {}
        self._manifest_files: dict[str, dict] | None = None

    # ---- opening ----
    @classmethod
    def open(
        cls, url: str, cache_dir: str | Path | None = None, retry: storage.Retry = storage.DEFAULT_RETRY
    ) -> Mirror:
        """Fetch the manifest and the listing of vocab/ and masks/, refresh the mirror; O(shards + listed files)."""
        url = url.rstrip("/")
        root = mirror_dir(url, cache_dir)
        try:
            manifest = storage.read_bytes(storage.join(url, fmt.MANIFEST), retry)
        except FileNotFoundError:
            raise fmt.FormatError(
                f"{storage.redact(url)}: no {fmt.MANIFEST} (not a tagstream dataset, or its upload has not finished)"
            ) from None
        files = {}
        for d in LISTED_DIRS:
            for rel, version in storage.list_versions(storage.join(url, d), retry).items():
                problem = key_problem(f"{d}/{rel}")
                if problem is not None:
                    log.warning("%s: the key %r under %s/ %s; ignored", storage.redact(url), rel, d, problem)
                elif not LOCAL_ONLY.search(rel):
                    files[f"{d}/{rel}"] = version
        state = {"url": url, "manifest_sha256": hashlib.sha256(manifest).hexdigest(), "files": files}
        root.mkdir(parents=True, exist_ok=True)
        with _exclusive(root / LOCKS / "open"):
            old = cls._read_state(root)
            old_files = old.get("files") if old is not None else None
            if isinstance(old_files, dict):
                for rel, version in old_files.items():
                    if files.get(rel) != version and key_problem(rel) is None:  # replaced or removed at the source
                        local_file(root, rel).unlink(missing_ok=True)
            changed = old is None or old.get("manifest_sha256") != state["manifest_sha256"]
            if changed:  # another version of the dataset (or a first open): per-version files start over
                shutil.rmtree(root / fmt.INDEX_DIR, ignore_errors=True)
                (root / fmt.TAGS).unlink(missing_ok=True)
            _write_bytes_atomic(root / fmt.MANIFEST, manifest)
            fmt.write_json_atomic(root / SOURCE, state)
            mirror = cls(root, state, retry)
            if changed:
                mirror._drop_stale_shards(read_manifest(root))
        return mirror

    @classmethod
    def attach(cls, root: str | Path, retry: storage.Retry = storage.DEFAULT_RETRY) -> Mirror | None:
        """The mirror a local directory is, or None for an ordinary dataset directory (no network)."""
        state = cls._read_state(Path(root))
        return None if state is None else cls(Path(root), state, retry)

    @staticmethod
    def _read_state(root: Path) -> dict | None:
        try:
            state = json.loads((root / SOURCE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise fmt.FormatError(
                f"{root / SOURCE}: unreadable mirror state ({exc}); delete {root} to start over"
            ) from None
        if not isinstance(state, dict) or not isinstance(state.get("url"), str):
            raise fmt.FormatError(f"{root / SOURCE}: not a mirror state; delete {root} to start over")
        return state

    def _drop_stale_shards(self, manifest: dict) -> None:
        wanted = {s["name"]: s for s in manifest["shards"]}
        for d in sorted((self.root / fmt.SHARDS_DIR).glob("*.lmdb")):
            entry = wanted.get(d.name[: -len(".lmdb")])
            if entry is None or not self.shard_ready(entry):
                shutil.rmtree(d, ignore_errors=True)

    # ---- small files ----
    def ensure_file(self, rel: str) -> Path:
        """root/rel, fetched whole if missing and checked against its checksum record as it arrives (a mismatch
        is downloaded once more, then refused: storage.ChecksumError); a file missing at the source too is left
        missing (the caller reports it as it would for a local dataset)."""
        path = local_file(self.root, rel)
        if path.exists():
            return path
        expected = self.expected(rel)
        with _exclusive(self.root / LOCKS / (rel.replace("/", "__") + ".get")):
            if not path.exists():
                try:
                    storage.get(
                        storage.join(self.url, rel),
                        path,
                        expected_size=expected and expected.get("bytes"),
                        sha256=expected and expected["sha256"],
                        retry=self.retry,
                    )
                except FileNotFoundError:
                    pass
        return path

    def expected(self, rel: str) -> dict | None:
        """The checksum record of a dataset file ({"sha256"[, "bytes"]}): the manifest's for the index and
        tags.tsv, a vocabulary's checksums.json, a mask's NAME.json (each fetched first); None where an older
        tagstream recorded none."""
        if self._manifest_files is None:
            self._manifest_files = checksums.manifest_files(read_manifest(self.root))
        if rel in self._manifest_files:
            return self._manifest_files[rel]
        parts = rel.split("/")
        if parts[0] == fmt.VOCAB_DIR and len(parts) == 3 and parts[2] != checksums.VOCAB_SUMS:
            sums = checksums.read_sums(self.ensure_file(f"{fmt.VOCAB_DIR}/{parts[1]}/{checksums.VOCAB_SUMS}"))
            return (sums or {}).get(parts[2])
        if parts[0] == fmt.MASKS_DIR and len(parts) == 2 and rel.endswith(".npy"):
            return checksums.read_sums(self.ensure_file(checksums.mask_sums_path(Path(rel)).as_posix()))
        return None

    def ensure_dir(self, rel_dir: str) -> Path:
        """Every listed file under rel_dir/ (a vocabulary), fetched if missing."""
        prefix = rel_dir.rstrip("/") + "/"
        for rel in self.files:
            if rel.startswith(prefix):
                self.ensure_file(rel)
        return self.root / rel_dir

    def vocab_names(self) -> list[str]:
        return sorted(
            {rel.split("/")[1] for rel in self.files if re.fullmatch(rf"{fmt.VOCAB_DIR}/[^/]+/vocab\.json", rel)}
        )

    def mask_names(self) -> list[str]:
        return sorted(
            rel.split("/")[1][: -len(".npy")] for rel in self.files if re.fullmatch(rf"{fmt.MASKS_DIR}/[^/]+\.npy", rel)
        )

    # ---- shards ----
    def shard_url(self, entry: dict) -> str:
        return storage.join(self.url, fmt.SHARDS_DIR, f"{entry['name']}.lmdb", "data.mdb")

    def shard_ready(self, entry: dict) -> bool:
        """Is the shard in the mirror and verified against this manifest entry? (a stat and a small read)"""
        d = fmt.shard_path(self.root, entry["name"])
        try:
            size = (d / "data.mdb").stat().st_size
            marker = json.loads((d / VERIFIED).read_text())
        except (OSError, ValueError):
            return False
        return (
            isinstance(marker, dict)
            and marker.get("sha256") == entry.get("sha256", "")
            and size == marker.get("bytes")
            and entry.get("bytes") in (None, size)
        )

    def ensure_shard(self, entry: dict) -> bool:
        """Make the shard ready (download and verify it unless it is); True when this call downloaded it.
        One process of the machine downloads a shard; the others wait on its lock, then find it ready."""
        if self.shard_ready(entry):
            return False
        name = entry["name"]
        failed = self.root / LOCKS / f"{name}.failed"
        waited_since = time.time()
        with _exclusive(self.root / LOCKS / f"{name}.get"):
            if self.shard_ready(entry):
                return False
            given_up = _given_up(failed)
            if given_up is not None and given_up["at"] >= waited_since:  # while this one waited: one retry budget
                raise storage.StorageError(f"{given_up['error']} (given up by another download on this machine)")
            try:
                self._download_shard(entry)
            except storage.StorageError as exc:
                _write_bytes_atomic(failed, json.dumps({"error": str(exc), "at": time.time()}).encode())
                raise
            failed.unlink(missing_ok=True)
        return True

    def _download_shard(self, entry: dict) -> None:
        """Download and verify one shard (under its lock), then write verified.json beside it."""
        name = entry["name"]
        d = fmt.shard_path(self.root, name)
        d.mkdir(parents=True, exist_ok=True)
        (d / VERIFIED).unlink(missing_ok=True)
        for stale in d.glob("data.mdb.part*"):  # a download killed mid-way
            stale.unlink(missing_ok=True)
        t0 = time.monotonic()
        size = storage.get(
            self.shard_url(entry),
            d / "data.mdb",
            expected_size=entry.get("bytes"),
            sha256=entry.get("sha256") or None,
            retry=self.retry,
        )
        record = {
            "sha256": entry.get("sha256", ""),
            "bytes": size,
            "seconds": round(time.monotonic() - t0, 3),
            "by": {"rank": os.environ.get("RANK"), "host": os.uname().nodename, "pid": os.getpid()},
        }
        fmt.write_json_atomic(d / VERIFIED, record)

    def fetch_all(self, threads: int = 4) -> None:
        """Every file of the dataset into the mirror, shards verified (what `tagstream verify URL` then checks)."""
        from concurrent.futures import ThreadPoolExecutor

        manifest = read_manifest(self.root)
        rels = [fmt.TAGS, fmt.REJECTS, *self.files]
        arrays = [*fmt.INDEX_ARRAYS, *fmt.OPTIONAL_INDEX_ARRAYS]  # an optional one missing at the source stays missing
        rels += [fmt.index_path(Path(), s["name"], a).as_posix() for s in manifest["shards"] for a in arrays]
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(self.ensure_file, rels))
            list(pool.map(self.ensure_shard, manifest["shards"]))

    # ---- space ----
    def use(self, entries: list[dict]) -> None:
        """Mark shards as in use by this process (shared locks, released by release() or exit)."""
        for entry in entries:
            if entry["name"] not in self._in_use:
                path = self.root / LOCKS / f"{entry['name']}.use"
                path.parent.mkdir(parents=True, exist_ok=True)
                f = open(path, "a")
                fcntl.flock(f, fcntl.LOCK_SH)
                self._in_use[entry["name"]] = f

    def release(self) -> None:
        for f in self._in_use.values():
            f.close()
        self._in_use.clear()

    def cached_shards(self) -> dict[str, int]:
        """Verified shards in the mirror: name -> bytes."""
        out = {}
        for d in (self.root / fmt.SHARDS_DIR).glob("*.lmdb"):
            try:
                out[d.name[: -len(".lmdb")]] = int(json.loads((d / VERIFIED).read_text())["bytes"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    def make_room(self, needed: list[dict], limit: int) -> list[str]:
        """Evict shards no process uses, least recently verified first, until the cached shards plus the
        needed ones not yet cached fit in `limit` bytes (0 = no limit); refuse what cannot fit, and what
        the disk cannot hold. Returns the evicted names."""
        names = {e["name"] for e in needed}
        need = sum(int(e.get("bytes") or 0) for e in needed)
        if limit and need > limit:
            raise ValueError(
                f"data.cache_limit={limit} bytes is less than the {need} bytes of the {len(needed)} shards this "
                f"rank samples from; raise it, or train on more ranks (each reads 1/world of the shards)"
            )
        cached = self.cached_shards()
        missing = sum(int(e.get("bytes") or 0) for e in needed if e["name"] not in cached)
        total = sum(cached.values()) + missing
        evicted: list[str] = []
        if limit and total > limit:

            def age(name: str) -> float:
                return (fmt.shard_path(self.root, name) / VERIFIED).stat().st_mtime

            for name in sorted((n for n in cached if n not in names), key=age):
                if total <= limit:
                    break
                lock = self.root / LOCKS / f"{name}.use"
                with open(lock, "a") as f:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # another loader reads it
                    shutil.rmtree(fmt.shard_path(self.root, name), ignore_errors=True)
                total -= cached[name]
                evicted.append(name)
            if total > limit:
                raise ValueError(
                    f"{self.root}: the cached shards in use by other processes plus this rank's "
                    f"{need} bytes exceed data.cache_limit={limit} bytes (it covers every rank sharing the cache dir)"
                )
        free = shutil.disk_usage(self.root).free
        if missing > free:
            raise ValueError(
                f"{self.root}: {missing} bytes of shards to download but only {free} bytes free on its disk"
            )
        return evicted
