"""A real S3-protocol server on 127.0.0.1 for the object-storage tests: moto's standalone server behind
a small fault-injecting HTTP proxy that also counts requests per path.

    server = S3Server.start()            # moto on a free port + the proxy in front of it
    env = server.env()                   # AWS_ENDPOINT_URL (the proxy), dummy keys, region
    server.create_bucket("ds")
    server.proxy.inject("/ds/shards/*", "drop", times=1)   # cut the next matching body in half
    server.proxy.counts("GET", "/ds/shards/*")             # GETs that reached the proxy, per path
    server.proxy.go_away()                                  # refuse every new connection
    server.stop()

Pytest fixtures: `s3_server` (one server per test, its env set in os.environ for the test) and
`s3_env` (just the env dict). Clients never talk to moto directly: every byte passes the proxy, so
the counters see every request and the faults hit every client, including subprocesses that got the
env. Moto does not check signatures, so the proxy forwards requests unchanged.
"""

from __future__ import annotations

import fnmatch
import functools
import http.client
import os
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import urlsplit

import pytest

FAULTS = ("drop", "500", "corrupt", "stall")
REGION = "us-east-1"
SECRET = "s3server-dummy-secret-never-logged"  # distinctive, so a test can look for it in messages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Fault:
    pattern: str  # fnmatch pattern on the request path (/bucket/key), e.g. "/ds/shards/00001.lmdb/*"
    kind: str  # one of FAULTS
    times: int  # matching requests still to fault; -1 = every one
    method: str = "GET"


class FaultProxy:
    """HTTP proxy in front of an upstream server, injecting faults and counting requests.

    Faults (each on the next `times` requests whose method and path match; times=-1: always):
      "drop"    send the status line, headers and half of the body, then close the connection
      "500"     answer 500 InternalError (S3 XML) without asking upstream
      "corrupt" forward the response with one byte in the middle of the body flipped
      "stall"   read the request and never answer (a client must time out)
    `go_away()` closes the listening socket: new connections are refused (the server is gone).
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._requests: Counter[tuple[str, str]] = Counter()
        self._bytes: Counter[str] = Counter()  # body bytes sent per GET path (faulted responses included)
        self.faulted: Counter[tuple[str, str]] = Counter()  # (kind, path) -> faults applied
        self.log: list[tuple[str, str]] = []  # (method, path) of every request, in arrival order
        self._stall = threading.Event()  # set on stop: stalled handlers return
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- control (called by tests) ----
    def inject(self, pattern: str, kind: str, *, times: int = 1, method: str = "GET") -> None:
        if kind not in FAULTS:
            raise ValueError(f"fault kind={kind!r} is not one of {FAULTS}")
        with self._lock:
            self._faults.append(Fault(pattern, kind, times, method.upper()))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def counts(self, method: str = "GET", pattern: str = "*") -> dict[str, int]:
        """Requests per path (query string stripped) of a method whose path matches pattern."""
        with self._lock:
            return {p: n for (m, p), n in self._requests.items() if m == method.upper() and fnmatch.fnmatch(p, pattern)}

    def bytes_sent(self, pattern: str = "*") -> dict[str, int]:
        with self._lock:
            return {p: n for p, n in self._bytes.items() if fnmatch.fnmatch(p, pattern)}

    def reset_counts(self) -> None:
        with self._lock:
            self._requests.clear()
            self._bytes.clear()
            self.log.clear()
            self.faulted.clear()

    def go_away(self) -> None:
        """Stop accepting connections (clients then see 'connection refused')."""
        self._stall.set()
        self._server.shutdown()
        self._server.server_close()

    stop = go_away

    # ---- request handling ----
    def _take_fault(self, method: str, path: str) -> str | None:
        with self._lock:
            self._requests[(method, path)] += 1
            self.log.append((method, path))
            for f in self._faults:
                if f.times != 0 and f.method == method and fnmatch.fnmatch(path, f.pattern):
                    if f.times > 0:
                        f.times -= 1
                    self.faulted[(f.kind, path)] += 1
                    return f.kind
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        method = h.command
        path = urlsplit(h.path).path
        body = _read_request_body(h)
        fault = self._take_fault(method, path)
        if fault == "stall":
            self._stall.wait(timeout=600)
            h.close_connection = True
            return
        if fault == "500":
            payload = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code><Message>injected</Message></Error>"
            h.send_response(500)
            h.send_header("Content-Type", "application/xml")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            return
        headers = {
            k: v for k, v in h.headers.items() if k.lower() not in ("transfer-encoding", "content-length", "connection")
        }
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            conn.request(method, h.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            status, resp_headers = resp.status, resp.getheaders()
        finally:
            conn.close()
        if fault == "corrupt" and data:
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
        h.send_response(status)
        for k, v in resp_headers:
            if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                h.send_header(k, v)
        if method == "HEAD":
            length = {k.lower(): v for k, v in resp_headers}.get("content-length", "0")
            h.send_header("Content-Length", length)
            h.end_headers()
            return
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if fault == "drop":
            sent = data[: len(data) // 2]
            h.wfile.write(sent)
            h.wfile.flush()
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        else:
            sent = data
            h.wfile.write(data)
        if method == "GET":
            with self._lock:
                self._bytes[path] += len(sent)


def _read_request_body(h: BaseHTTPRequestHandler) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                break
            parts.append(h.rfile.read(size))
            h.rfile.readline()
        return b"".join(parts)
    n = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(n) if n else b""


@functools.lru_cache(maxsize=8)
def _client(endpoint_url: str):
    import botocore.session

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint_url, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key=SECRET
    )


class S3Server:
    """moto's S3 server (in a thread, 127.0.0.1, free port) with a FaultProxy in front."""

    def __init__(self, moto, proxy: FaultProxy, *, owns_moto: bool = True):
        self._moto = moto
        self._owns_moto = owns_moto
        self.proxy = proxy

    @staticmethod
    def start_moto():
        """moto's threaded server on 127.0.0.1 and a free port (started once per test session by the fixtures)."""
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        return moto

    @classmethod
    def start(cls, moto=None) -> S3Server:
        """A server with a fresh proxy; with `moto` given, that (shared) server emptied instead of a new one."""
        if moto is None:
            moto = cls.start_moto()
            return cls(moto, FaultProxy(moto.get_host_and_port()[1]), owns_moto=True)
        _, port = moto.get_host_and_port()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:  # moto's own API: forget every bucket and object of earlier tests
            conn.request("POST", "/moto-api/reset")
            conn.getresponse().read()
        finally:
            conn.close()
        return cls(moto, FaultProxy(port), owns_moto=False)

    @property
    def endpoint_url(self) -> str:
        """What clients use: the proxy's address."""
        return self.proxy.url

    def env(self) -> dict[str, str]:
        """Environment for any S3 client (botocore/s3fs read these): endpoint, dummy keys, region."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_SESSION_TOKEN": "testing-session-token",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            # no instance-metadata probing, no shared config files from the machine
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def client(self):
        """A botocore S3 client talking through the proxy (for test set-up; made once per proxy)."""
        return _client(self.endpoint_url)

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def stop(self) -> None:
        try:
            self.proxy.stop()
        except OSError:
            pass
        if self._owns_moto:
            self._moto.stop()


@pytest.fixture(scope="session")
def _moto_server() -> Iterator[object]:
    moto = S3Server.start_moto()
    yield moto
    moto.stop()


@pytest.fixture
def s3_server(_moto_server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """An empty S3 server and a fresh proxy per test (moto itself is shared by the session and reset);
    its env is set in os.environ (and restored after the test)."""
    server = S3Server.start(_moto_server)
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server) -> dict[str, str]:
    return s3_server.env()
