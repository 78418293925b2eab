"""The input-format rows of `tagstream bench convert`: the same images converted from WebDataset tars as from
a folder of files, and the full-decode ceiling of the same processes (read + Pillow's full decode, nothing
else: no validation, hash, re-encode or write), which no conversion can beat.

Every input file is read once before any timing (`warm`), so no row pays the others' disk reads.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from tagstream.tools.convert.pool import process_pool
from tagstream.tools.synth.tars import TARS, write_tars

TAR_SAMPLES = 100  # samples per tar of the bench's source
BATCH = 16  # images per task of the ceiling's pool (the converter's batch)


def write_source_tars(root: Path, lines: list[str]) -> Path:
    """The source's images and tags as WebDataset tars in root/tars/ (img2dataset's layout)."""
    write_tars(root, lines, TAR_SAMPLES)
    return root / TARS


def warm(root: Path) -> int:
    """Read every file under root once (into the page cache); returns the bytes read."""
    total = 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            total += len(path.read_bytes())
    return total


def _decode(paths: list[str]) -> int:
    from PIL import Image

    for path in paths:
        with open(path, "rb") as f:
            Image.open(io.BytesIO(f.read())).convert("RGB")
    return len(paths)


def decode_ceiling(src: Path, workers: int) -> float:
    """Seconds to read and fully decode every image the JSON lines at src name, in `workers` processes
    started as the converter starts its own (forkserver, pool start-up included)."""
    lines = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    batches = [[str(src.parent / r["image"]) for r in lines[i : i + BATCH]] for i in range(0, len(lines), BATCH)]
    t0 = time.perf_counter()
    if workers == 1:
        for batch in batches:
            _decode(batch)
    else:
        with process_pool(workers) as pool:
            sum(pool.map(_decode, batches))
    return time.perf_counter() - t0


def input_rows(src: Path, files_row: dict, tars_row: dict, workers: int, images: int) -> list[dict]:
    """The ceiling row of `workers` processes, measured now; adds to the files and tars rows of the same
    workers their fraction of it, and to the tars row its rate over the files row's. Returns [tars, ceiling]."""
    ceiling = decode_ceiling(src, workers)
    ceiling_rate = images / ceiling
    ceiling_row = {
        "name": f"full-decode ceiling, {workers} process{'es' * (workers > 1)}",
        "cpus": workers,
        "inputs": images,
        "seconds": ceiling,
        "images_per_s": ceiling_rate,
        "bytes_per_image": None,
    }
    tars_row["vs_files"] = tars_row["images_per_s"] / files_row["images_per_s"]
    for row in (files_row, tars_row):
        row["of_ceiling"] = row["images_per_s"] / ceiling_rate
    return [tars_row, ceiling_row]
