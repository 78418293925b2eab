"""Images named by http(s):// URLs, from a real HTTP server on 127.0.0.1: a server error or a refused
connection is retried and, when it lasts, stops the conversion (a rerun resumes); only a 404 is a missing file."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading

import pytest

from tagstream.loader.data.storage import StorageError
from tagstream.tools.convert.engine import convert
from tests.helpers.damage import small_jpeg


class _Server:
    """Serves small JPEGs; /flaky-N answers 503 to its first 2 requests; paths in `down` answer 503; /gone 404."""

    def __init__(self):
        self.down: set[str] = set()
        self.seen: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body: bool):
                n = server.seen[self.path] = server.seen.get(self.path, 0) + 1
                if self.path.startswith("/gone"):
                    self.send_response(404)
                elif self.path in server.down or (self.path.startswith("/flaky") and n <= 2):
                    self.send_response(503)
                else:
                    data = small_jpeg(128, 96)
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if body:
                        self.wfile.write(data)
                    return
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.httpd.shutdown()


@pytest.mark.timeout(120)
def test_server_errors_are_retried_or_stop_the_conversion_and_only_404_is_missing(server, tmp_path):
    rows = [
        {"image": f"{server.url}/ok.jpg", "tags": ["#a"]},
        {"image": f"{server.url}/flaky-1.jpg", "tags": ["#b"]},
        {"image": f"{server.url}/gone.jpg", "tags": ["#c"]},
        {"image": f"{server.url}/later.jpg", "tags": ["#d"]},
    ]
    src = tmp_path / "net.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    server.down.add("/later.jpg")  # a server error that lasts: the conversion stops, it does not reject
    with pytest.raises(StorageError, match="later.jpg.*503.*gave up after"):
        convert(src, tmp_path / "ds", shard_size=10)
    server.down.clear()
    summary = convert(src, tmp_path / "ds", shard_size=10)  # the rerun resumes and gets it
    assert summary.images == 3 and summary.rejected == {"missing_file": 1}
    assert server.seen["/flaky-1.jpg"] >= 3  # two 503s retried
    reject = json.loads((tmp_path / "ds" / "rejects.jsonl").read_text().splitlines()[0])
    assert reject["reason"] == "missing_file" and "gone.jpg" in reject["detail"]
