"""The synthetic world as WebDataset tars, laid out as img2dataset writes them: per sample `KEY.<ext>` (the
image bytes), `KEY.json` ({"key", "status", "tags"} or a caption) and `KEY.txt` (the caption, when there is
one), `samples_per_tar` samples per `tars/NNNNN.tar`, in hashtags.jsonl's order.

Broken jsonl entries stay broken in the tars: a line that is not JSON becomes a .json member that is not
JSON, a missing image a sample with no image member, a zero-byte file a zero-byte member. Members carry
mtime 0 and fixed owners, so the tars are byte-identical for a seed.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

TARS = "tars"


def add_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    """One member with fixed metadata (mtime 0, mode 644, no owner), so a tar is byte-identical for its content."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uname = info.gname = ""
    tf.addfile(info, io.BytesIO(data))


def _sample(world: Path, key: str, line: str) -> list[tuple[str, bytes]]:
    """The members of one jsonl line's sample."""
    try:
        record = json.loads(line)
    except ValueError:
        return [(f"{key}.json", line.encode("utf-8"))]
    if not isinstance(record, dict):
        return [(f"{key}.json", line.encode("utf-8"))]
    image = record.get("image")
    meta = {"key": key, "status": "success", **{k: v for k, v in record.items() if k != "image"}}
    members = []
    if isinstance(image, str) and (world / image).is_file():
        members.append((f"{key}.{image.rsplit('.', 1)[-1].lower()}", (world / image).read_bytes()))
    members.append((f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8")))
    if isinstance(record.get("caption"), str):
        members.append((f"{key}.txt", record["caption"].encode("utf-8")))
    return members


def write_tars(world: Path, lines: list[str], samples_per_tar: int) -> list[Path]:
    """Write WORLD/tars/NNNNN.tar from the jsonl lines (images read from WORLD); returns the tar paths."""
    if not isinstance(samples_per_tar, int) or samples_per_tar < 1:
        raise ValueError(f"samples_per_tar = {samples_per_tar!r}: must be a positive integer")
    world = Path(world)
    (world / TARS).mkdir(exist_ok=True)
    paths = []
    for t, lo in enumerate(range(0, len(lines), samples_per_tar)):
        path = world / TARS / f"{t:05d}.tar"
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
            for n in range(lo, min(lo + samples_per_tar, len(lines))):
                for name, data in _sample(world, f"{n:09d}", lines[n]):
                    add_member(tf, name, data)
        paths.append(path)
    return paths
