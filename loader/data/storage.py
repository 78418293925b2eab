"""Object storage through fsspec (s3://, gs://, https://, file://, plain paths): read, list, get and put with one
bounded retry policy, so every caller handles a flaky network the same way.

Transient faults (connection reset or refused, timeouts, 5xx/429, a truncated body) are retried with backoff,
`Retry.attempts` failures per object in all (a download's requests share one budget); anything else (no such object,
access denied) fails at once, as a one-line `StorageError` naming the object, credential-looking parts removed. Each
request has a socket timeout, so a stalled server costs one object at most `Retry.bound_s` (data.storage_timeout);
the backends' own retries are off where they can be.

Credentials and endpoints come from each backend's standard places: for S3 the AWS environment (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_PROFILE, ...) and ~/.aws files; for GCS the Google application-default credentials.

Downloads (`get`) fetch bounded byte ranges, resume after a fault from the bytes already written, hash while
writing, and rename into place only when the size (and sha256, when given) match; a checksum mismatch is
downloaded once more from scratch, then reported as a `ChecksumError`. Nothing here reads or logs credentials.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable
from urllib.parse import urlsplit

from tagstream.loader.data.retries import (  # re-exported: storage.Retry, storage.StorageError, ...
    DEFAULT_RETRY,
    Budget,
    ChecksumError,
    Retry,
    StorageError,
    TruncatedRead,
    describe,
    is_transient,
    redact,
    retrying,
)

log = logging.getLogger(__name__)
__all__ = [
    "DEFAULT_RETRY",
    "ChecksumError",
    "Retry",
    "StorageError",
    "TruncatedRead",
    "describe",
    "exists",
    "filesystem",
    "get",
    "is_transient",
    "is_url",
    "join",
    "list_files",
    "list_versions",
    "local_path",
    "open_read",
    "protocol",
    "put",
    "put_bytes",
    "read_bytes",
    "read_text",
    "redact",
    "remove",
    "retrying",
    "size",
]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
CHUNK = 16 << 20  # bytes per ranged read of a download: bounds memory and the work a fault throws away


# ---------------------------------------------------------------- URLs


def is_url(path: str | os.PathLike) -> bool:
    """True for "scheme://..." strings (s3://, gs://, https://, file://, memory://); False for plain paths."""
    return isinstance(path, str) and bool(_URL.match(path))


def protocol(url: str) -> str:
    """ "s3" of "s3://bucket/key"; "file" for a plain path."""
    return url.split("://", 1)[0].lower() if is_url(url) else "file"


def join(base: str | os.PathLike, *parts: str) -> str:
    """base/part/...: "/"-joined for a URL, os.path-joined for a plain path."""
    if not is_url(base):
        return str(Path(base, *parts))
    tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
    return base.rstrip("/") + ("/" + tail if tail else "")


def local_path(url: str | os.PathLike) -> Path | None:
    """The local path of a plain path or file:// URL; None for a remote URL."""
    if not is_url(url):
        return Path(url)
    if protocol(str(url)) == "file":
        return Path(urlsplit(str(url)).path)
    return None


# ---------------------------------------------------------------- file systems

_FS: dict[tuple[int, str, float, int], Any] = {}
_FS_LOCK = threading.Lock()
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCS", "FSSPEC_")  # where the backends find endpoints and credentials


def _fresh_in_child() -> None:
    # a forked child (a loader worker) makes its own clients; a lock held by a parent thread at fork
    # time would stay held in the child forever
    global _FS_LOCK
    _FS.clear()
    _FS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_fresh_in_child)


def _env_fingerprint() -> int:
    """Changes when the environment a backend reads its endpoint/credentials from changes (a new
    endpoint must get a new client); a hash, so the values themselves are kept nowhere."""
    return hash(tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES))))


def _backend_options(proto: str, retry: Retry) -> dict[str, Any]:
    if proto in ("s3", "s3a"):
        # one attempt per call inside botocore: our loop is the only retry loop (bounded, logged)
        return {
            "config_kwargs": {
                "connect_timeout": retry.timeout_s,
                "read_timeout": retry.timeout_s,
                "retries": {"total_max_attempts": 1},
            }
        }
    if proto in ("http", "https"):
        import aiohttp

        return {
            "client_kwargs": {"timeout": aiohttp.ClientTimeout(sock_connect=retry.timeout_s, sock_read=retry.timeout_s)}
        }
    return {}


def filesystem(url: str, retry: Retry = DEFAULT_RETRY) -> tuple[Any, str]:
    """(fsspec file system, backend path) of a URL or plain path. One instance per process, protocol,
    timeout and backend environment: never shared across a fork (event loops and sockets are per process)."""
    import fsspec

    url = str(url)
    proto = protocol(url)
    key = (os.getpid(), proto, retry.timeout_s, _env_fingerprint())
    with _FS_LOCK:
        fs = _FS.get(key)
        if fs is None:
            try:
                cls = fsspec.get_filesystem_class(proto)
            except (ImportError, ValueError) as exc:
                raise StorageError(
                    f"{redact(url)}: no fsspec backend for {proto!r} ({exc}); install tagstream[storage]"
                ) from exc
            fs = cls(skip_instance_cache=True, **_backend_options(proto, retry))
            if proto in ("s3", "s3a"):
                fs.retries = 1  # s3fs's own loop around each call
            _FS[key] = fs
    return fs, fs._strip_protocol(url)


# ---------------------------------------------------------------- reading and listing


def exists(url: str, retry: Retry = DEFAULT_RETRY) -> bool:
    fs, path = filesystem(url, retry)
    return retrying(url, lambda: fs.exists(path), retry)


def size(url: str, retry: Retry = DEFAULT_RETRY) -> int:
    """Size in bytes of one object."""
    fs, path = filesystem(url, retry)
    return int(retrying(url, lambda: fs.info(path), retry)["size"])


def read_bytes(url: str, retry: Retry = DEFAULT_RETRY) -> bytes:
    """A whole (small) object."""
    fs, path = filesystem(url, retry)
    return retrying(url, lambda: fs.cat_file(path), retry)


def read_text(url: str, retry: Retry = DEFAULT_RETRY) -> str:
    return read_bytes(url, retry).decode("utf-8")


def list_files(url: str, retry: Retry = DEFAULT_RETRY) -> list[str]:
    """Every object under url (recursively), as sorted "/"-separated paths relative to it; [] if none."""
    return sorted(list_versions(url, retry))


def list_versions(url: str, retry: Retry = DEFAULT_RETRY) -> dict[str, str]:
    """Every object under url (recursively): relative path -> a version string (size and ETag,
    generation or mtime, whichever the backend gives) that changes when the object is replaced."""
    fs, path = filesystem(url, retry)
    base = path.rstrip("/")

    def find() -> dict[str, str]:
        try:
            found = fs.find(base, withdirs=False, detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        for p, info in found.items():
            rel = p[len(base) :].lstrip("/")
            if rel and info.get("type", "file") != "directory":
                out[rel] = _version(info)
        return out

    return retrying(url, find, retry)


def _version(info: dict) -> str:
    """An object's version string from the backend's metadata: its size and ETag, generation or mtime."""
    tag = next((info[k] for k in ("ETag", "etag", "generation", "mtime", "LastModified") if info.get(k)), "")
    return f"{info.get('size')}:{str(tag).strip(chr(34))}"


def version(url: str, retry: Retry = DEFAULT_RETRY) -> str:
    """One object's version string, as list_versions gives it."""
    fs, path = filesystem(url, retry)
    return retrying(url, lambda: _version(fs.info(path)), retry)


class _RetryingRaw(io.RawIOBase):
    """A read-only remote object as a raw stream; a transient fault reopens it at the current offset."""

    def __init__(self, url: str, retry: Retry, block_size: int):
        self._url, self._retry, self._block = url, retry, block_size
        self._fs, self._path = filesystem(url, retry)
        self._f = None
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            offset += self.size
        elif whence == io.SEEK_CUR:
            offset += self._pos
        self._pos = max(0, offset)
        if self._f is not None:
            self._f.seek(self._pos)
        return self._pos

    @property
    def size(self) -> int:
        return size(self._url, self._retry) if self._f is None else int(self._f.size)

    def readinto(self, buffer) -> int:
        def once() -> bytes:
            try:
                if self._f is None:
                    self._f = self._fs.open(self._path, "rb", block_size=self._block)
                    self._f.seek(self._pos)
                return self._f.read(len(buffer))
            except Exception:
                self._drop()
                raise

        data = retrying(self._url, once, self._retry)
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def _drop(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped anyway
                pass

    def close(self) -> None:
        self._drop()
        super().close()


def open_read(url: str | os.PathLike, retry: Retry = DEFAULT_RETRY, *, block_size: int = 4 << 20) -> BinaryIO:
    """A buffered, seekable binary reader of one object (a tar, a Parquet file, an image) that survives
    transient faults by reopening at its offset. Plain paths open as local files."""
    local = local_path(url)
    if local is not None:
        return open(local, "rb")
    raw = _RetryingRaw(str(url), retry, block_size)
    return io.BufferedReader(raw, buffer_size=block_size)


# ---------------------------------------------------------------- downloading and uploading


def _download_once(url: str, fs: Any, path: str, part: Path, total: int, retry: Retry, chunk: int, progress, budget):
    """Ranged reads into `part`, resuming after transient faults (`budget`: the object's); returns its sha256."""
    h = hashlib.sha256()
    done = 0
    with open(part, "wb") as out:
        while done < total:
            end = min(done + chunk, total)

            def read_range(start: int = done, stop: int = end) -> bytes:
                data = fs.cat_file(path, start=start, end=stop)
                if len(data) != stop - start:
                    raise TruncatedRead(f"asked bytes {start}-{stop}, got {len(data)}")
                return data

            data = retrying(url, read_range, retry, budget)
            out.write(data)
            h.update(data)
            done += len(data)
            if progress is not None:
                progress(len(data))
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest()


def get(
    url: str,
    dest: str | os.PathLike,
    *,
    expected_size: int | None = None,
    sha256: str | None = None,
    retry: Retry = DEFAULT_RETRY,
    chunk: int = CHUNK,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Download one object to dest (written as dest.part, renamed when whole); returns its size.

    The size must match expected_size (when given) and the content sha256 (when given); a sha
    mismatch is downloaded again from scratch once, then raises ChecksumError naming the object.
    """
    fs, path = filesystem(url, retry)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part, budget = dest.with_name(dest.name + f".part{os.getpid()}"), Budget()  # one retry budget per object
    total = int(retrying(url, lambda: fs.info(path), retry, budget)["size"])
    if expected_size is not None and total != expected_size:
        raise StorageError(f"{redact(url)}: object has {total} bytes, expected {expected_size}")
    try:
        for attempt in (1, 2):
            digest = _download_once(url, fs, path, part, total, retry, chunk, progress, budget)
            if sha256 is None or digest == sha256:
                os.replace(part, dest)
                return total
            if attempt == 1:
                log.warning(
                    "%s: sha256 %s does not match the expected %s; downloading it again", redact(url), digest, sha256
                )
        raise ChecksumError(f"{redact(url)}: sha256 {digest} does not match the expected {sha256} (downloaded twice)")
    finally:
        part.unlink(missing_ok=True)


def _parents(fs: Any, path: str) -> None:
    """A local (file://) target's folders, which object stores do not need."""
    if "file" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)):
        fs.makedirs(fs._parent(path), exist_ok=True)


def put(src: str | os.PathLike, url: str, retry: Retry = DEFAULT_RETRY) -> None:
    """Upload a local file to url (whole upload retried on transient faults)."""
    fs, path = filesystem(url, retry)
    _parents(fs, path)
    retrying(url, lambda: fs.put_file(str(src), path), retry)


def put_bytes(data: bytes, url: str, retry: Retry = DEFAULT_RETRY) -> None:
    fs, path = filesystem(url, retry)
    _parents(fs, path)
    retrying(url, lambda: fs.pipe_file(path, data), retry)


def remove(url: str, retry: Retry = DEFAULT_RETRY) -> None:
    """Delete one object; a missing one is not an error."""
    fs, path = filesystem(url, retry)

    def rm() -> None:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)

    retrying(url, rm, retry)
