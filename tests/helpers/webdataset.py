"""One small image collection written as JSON lines + files, as WebDataset tars and as Parquet tables, with
the same images, tags, captions and ids in the same order (for the input-format tests), and tar helpers.

Image i is a flat colour derived from i (a baseline JPEG, every 5th a PNG, every 7th a progressive JPEG), its
tags ['all', 'mod3_<i%3>'] plus, for odd i, a caption '... #cap<i%4>'; its id is its WebDataset key.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from PIL import Image

KEYS_PER_TAR = (7, 5, 9)  # uneven tars: resume and parts cut inside and between them


def image_bytes(i: int) -> tuple[str, bytes]:
    img = Image.new("RGB", (40 + i % 5, 36 + i % 3), ((37 * i) % 256, (11 * i) % 256, 200 - 3 * i))
    buf = io.BytesIO()
    if i % 5 == 0:
        img.save(buf, "PNG")
        return "png", buf.getvalue()
    img.save(buf, "JPEG", quality=92, progressive=i % 7 == 0)
    return "jpg", buf.getvalue()


def record(i: int) -> dict:
    rec = {"key": f"{i:06d}", "tags": ["all", f"mod3_{i % 3}"]}
    if i % 2:
        rec["caption"] = f"photo {i} #Cap{i % 4}"
    return rec


def add_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            add_member(tf, name, data)
    return path


def sample_members(i: int) -> list[tuple[str, bytes]]:
    rec = record(i)
    ext, data = image_bytes(i)
    members = [(f"{rec['key']}.{ext}", data), (f"{rec['key']}.json", json.dumps({**rec, "status": "success"}).encode())]
    if "caption" in rec:
        members.append((f"{rec['key']}.txt", rec["caption"].encode()))
    return members


def write_collection(root: Path) -> dict[str, Path]:
    """The collection as root/c.jsonl (+ root/images/), root/tars/0000{0,1,2}.tar and root/tables/*.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = sum(KEYS_PER_TAR)
    (root / "images").mkdir(parents=True)
    (root / "tars").mkdir()
    (root / "tables").mkdir()
    lines = []
    for i in range(n):
        ext, data = image_bytes(i)
        (root / "images" / f"{i:06d}.{ext}").write_bytes(data)
        lines.append(
            json.dumps(
                {
                    "image": f"images/{i:06d}.{ext}",
                    "id": record(i)["key"],
                    **{k: v for k, v in record(i).items() if k != "key"},
                }
            )
        )
    (root / "c.jsonl").write_text("\n".join(lines) + "\n")
    start = 0
    for t, count in enumerate(KEYS_PER_TAR):
        write_tar(root / "tars" / f"{t:05d}.tar", [m for i in range(start, start + count) for m in sample_members(i)])
        start += count
    cut = 12
    for part, rows in enumerate((range(cut), range(cut, n))):
        table = pa.table(
            {
                "jpg": pa.array([image_bytes(i)[1] for i in rows], pa.binary()),
                "tags": [record(i)["tags"] for i in rows],
                "caption": [record(i).get("caption") for i in rows],
                "key": [record(i)["key"] for i in rows],
                "status": ["success"] * len(rows),
            }
        )
        pq.write_table(table, root / "tables" / f"{part:05d}.parquet", row_group_size=5)
    return {"jsonl": root / "c.jsonl", "tars": root / "tars", "parquet": root / "tables", "count": n}


def item_image(item) -> bytes | None:
    """The image bytes a source Item stands for: carried (streamed tars, Parquet) or at a local tar's offset."""
    if item.data is not None:
        return item.data
    if item.member is not None:
        path, offset, size = item.member
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)
    return None
