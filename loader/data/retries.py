"""One retry policy for every object-storage call (loader/data/storage.py): which faults are transient, how
often and how long to try, and errors of one line that name the object with any secret removed."""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Callable, TypeVar
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("tagstream.loader.data.storage")
T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Retry:
    """How hard to try: attempts per request, backoff between them, and a per-request socket timeout."""

    attempts: int = 5
    backoff_s: float = 0.25  # wait before the 2nd attempt; doubled each time, capped, with jitter
    max_backoff_s: float = 8.0
    timeout_s: float = 30.0  # connect and per-read timeout of one request

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts={self.attempts} must be >= 1")
        if self.backoff_s < 0 or self.max_backoff_s < self.backoff_s:
            raise ValueError(
                f"backoff_s={self.backoff_s}, max_backoff_s={self.max_backoff_s}: need 0 <= backoff_s <= max_backoff_s"
            )
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s={self.timeout_s} must be > 0")

    @classmethod
    def within(cls, seconds: float) -> Retry:
        """The default policy with its per-request timeout cut so that `bound_s` is `seconds`: what a stalled
        server may cost one object (data.storage_timeout)."""
        backoff = sum(min(cls.max_backoff_s, cls.backoff_s * 2**k) for k in range(cls.attempts - 1))
        if not (isinstance(seconds, (int, float)) and backoff + cls.attempts <= seconds <= 86_400):
            raise ValueError(
                f"storage_timeout={seconds!r} must be a number of seconds in [{backoff + cls.attempts:g}, 86400]"
            )
        return cls(timeout_s=(seconds - backoff) / cls.attempts)

    @property
    def bound_s(self) -> float:
        """The most one object may cost when every attempt times out: attempts x timeout_s plus the backoffs."""
        return self.attempts * self.timeout_s + sum(
            min(self.max_backoff_s, self.backoff_s * 2**k) for k in range(self.attempts - 1)
        )

    def wait_s(self, failures: int) -> float:
        """Seconds to sleep after `failures` failed attempts (1, 2, ...): full backoff halved by jitter at most."""
        full = min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1))
        return full * (0.5 + 0.5 * random.random())


DEFAULT_RETRY = Retry()


class StorageError(OSError):
    """An object could not be read or written (after the last retry, or at once for a permanent fault)."""


class ChecksumError(StorageError):
    """A downloaded object's sha256 differs from the expected one, twice."""


class TruncatedRead(OSError):
    """A ranged read returned fewer bytes than asked for (a body cut short): transient."""


_SECRETS = re.compile(
    r"(?i)((?:x-amz-)?(?:signature|credential|security-token|access[_-]?key[_-]?id|secret[_-]?access[_-]?key|token|sig)"
    r"\s*[=:]\s*)[^&\s,;\"']+"
)


def redact(text: str) -> str:
    """A URL or message with user:password@, query strings of URLs and key=value secrets removed."""

    def clean_url(m: re.Match) -> str:
        parts = urlsplit(m.group(0))
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    text = re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+", clean_url, str(text))
    return _SECRETS.sub(r"\1***", text)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    return status if isinstance(status, int) else None


_TRANSIENT_NAMES = {
    # aiohttp, botocore, google-auth/gcsfs and fsspec names for a network fault or a damaged body
    "ClientPayloadError",
    "ServerDisconnectedError",
    "ClientConnectionError",
    "ClientOSError",
    "ServerTimeoutError",
    "ContentLengthError",
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "IncompleteReadError",
    "ResponseStreamingError",
    "FlexibleChecksumError",
    "HTTPClientError",
    "ProxyConnectionError",
    "FSTimeoutError",
    "TransportError",
    "RetryError",
}


def is_transient(exc: BaseException) -> bool:
    """Is this fault worth another attempt? Network faults, timeouts, 5xx/429 and damaged bodies are;
    a missing object, a refused permission or a bad request are not."""
    for e in _chain(exc):
        if isinstance(e, FileNotFoundError):
            # fsspec's HTTP filesystem reports every failed HEAD/GET as "not found", a 503 or a refused
            # connection too: what decides is its cause (a real 404 has none that is transient)
            continue
        if isinstance(e, (PermissionError, IsADirectoryError, NotADirectoryError)):
            return False
        status = _status(e)
        if status is not None:
            return status in TRANSIENT_STATUS
        if isinstance(e, (ConnectionError, TimeoutError, TruncatedRead)):
            return True
        if type(e).__name__ in _TRANSIENT_NAMES:
            return True
        if isinstance(e, OSError) and e.errno == 121:  # EREMOTEIO: s3fs's translation of an S3 InternalError
            return True
    return False


def describe(exc: BaseException) -> str:
    """One line: the exception's type and message, secrets removed (for fsspec's HTTP "not found" that
    stands for another fault, that fault's)."""
    while isinstance(exc, FileNotFoundError) and (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    text = " ".join(str(exc).split()) or "(no message)"
    return redact(f"{type(exc).__name__}: {text}")[:400]


class Budget:
    """The failed attempts one object's requests have spent together (a download's size query and all its ranged
    reads share one): a stalled server costs an object at most Retry.bound_s, however many requests it takes."""

    def __init__(self) -> None:
        self.failures = 0


def retrying(what: str, call: Callable[[], T], retry: Retry = DEFAULT_RETRY, budget: Budget | None = None) -> T:
    """call() with retries on transient faults, Retry.attempts failures in all for the calls sharing `budget`.
    `what` names the object in messages (redacted). A missing object raises FileNotFoundError; any other final
    fault a StorageError."""
    budget = budget or Budget()
    while True:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised as one type
            if not is_transient(exc):
                if any(isinstance(e, FileNotFoundError) for e in _chain(exc)):
                    raise FileNotFoundError(f"{redact(what)}: no such object") from exc
                raise StorageError(f"{redact(what)}: {describe(exc)}") from exc
            budget.failures += 1
            if budget.failures >= retry.attempts:
                raise StorageError(
                    f"{redact(what)}: {describe(exc)} (gave up after {budget.failures} attempts)"
                ) from exc
            wait = retry.wait_s(budget.failures)
            log.warning(
                "%s: %s; attempt %d/%d, retrying in %.2f s",
                redact(what),
                describe(exc),
                budget.failures,
                retry.attempts,
                wait,
            )
            time.sleep(wait)
