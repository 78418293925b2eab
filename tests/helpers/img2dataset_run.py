"""The real img2dataset, run against a local HTTP server on 127.0.0.1: photo-like JPEGs at /img/N.jpg, 404s at
/gone/N.jpg and a non-image at /text/N.jpg, listed in a URL table with tags and captions; what it downloads (tars
or Parquet files, each with its NNNNN.parquet / NNNNN_stats.json sidecars) is what the converter gets."""

from __future__ import annotations

import http.server
import io
import socketserver
import threading
from pathlib import Path

import numpy as np
from PIL import Image


def photo_jpeg(i: int) -> bytes:
    """A small photo-like JPEG (a gradient with noise) whose colours derive from i."""
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:72, 0:96]
    base = np.stack([(x * 2 + 37 * i) % 256, (y * 3 + 11 * i) % 256, (x + y + 5 * i) % 256], axis=-1)
    noisy = np.clip(base + rng.integers(-12, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=90)
    return buf.getvalue()


class ImageServer:
    """/img/N.jpg: a JPEG; /gone/N.jpg: 404; /text/N.jpg: a text page served as image/jpeg."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                kind, _, name = self.path.strip("/").partition("/")
                if kind == "img":
                    body, ctype, code = photo_jpeg(int(name.split(".")[0])), "image/jpeg", 200
                elif kind == "text":
                    body, ctype, code = b"<html>not a picture</html>" * 20, "image/jpeg", 200
                else:
                    body, ctype, code = b"", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def url_table(path: Path, base: str, *, good: int, gone: int, text: int) -> list[dict]:
    """A Parquet URL table of good + gone + text rows (url, caption with #hashtags, tags), interleaved."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"url": f"{base}/img/{i}.jpg", "caption": f"photo {i} #tag{i % 3}", "tags": f"all,mod{i % 2}"}
        for i in range(good)
    ]
    for j in range(gone):
        rows.insert(3 * j + 1, {"url": f"{base}/gone/{j}.jpg", "caption": f"lost {j} #gone", "tags": "all"})
    for j in range(text):
        rows.insert(5 * j + 2, {"url": f"{base}/text/{j}.jpg", "caption": f"text {j} #text", "tags": "all"})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return rows


def download(table: Path, out: Path, output_format: str, processes: int = 1) -> Path:
    """img2dataset over the URL table into `out` (webdataset or parquet output format), keeping original sizes."""
    from img2dataset import download as i2d

    i2d(
        url_list=str(table),
        input_format="parquet",
        url_col="url",
        caption_col="caption",
        save_additional_columns=["tags"],
        output_format=output_format,
        output_folder=str(out),
        processes_count=processes,
        thread_count=4,
        number_sample_per_shard=8,
        resize_mode="no",
        timeout=5,
        retries=0,
        distributor="multiprocessing",
        disallowed_header_directives=[],
    )
    return out
