"""Ways to damage a converted dataset, for the fault-injection tests: truncation, bit flips, record
rewrites, and a manifest rewritten to match (so only the deeper checks can see the damage)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tagstream.loader.data import format as fmt


def data_file(root: Path, shard: str = "00000") -> Path:
    return fmt.shard_path(Path(root), shard) / "data.mdb"


def rewrite_manifest(root: Path, shard: str | None = None) -> None:
    """Recompute the byte size and sha256 of `shard` (default: every shard) in manifest.json, as a careless
    repair would: the damage stays, the manifest stops saying so."""
    path = Path(root) / fmt.MANIFEST
    manifest = json.loads(path.read_text())
    for entry in manifest["shards"]:
        if shard is None or entry["name"] == shard:
            data = data_file(root, entry["name"])
            entry["bytes"], entry["sha256"] = data.stat().st_size, fmt.file_sha256(data)
    fmt.write_json_atomic(path, manifest)


def forge_digests(root: Path, forge, shard: str | None = None) -> None:
    """Replace the digest array of `shard` (default: every shard) by forge(array) and record its checksum in the
    manifest, as an editor of the dataset would: only the bytes can tell."""
    import numpy as np

    path = Path(root) / fmt.MANIFEST
    manifest = json.loads(path.read_text())
    for entry in manifest["shards"]:
        if shard is None or entry["name"] == shard:
            index = fmt.index_path(Path(root), entry["name"], "digest")
            fmt.save_npy_atomic(index, np.asarray(forge(np.load(index)), "<u8"))
            entry["index"]["digest"] = fmt.file_sha256(index)
    fmt.write_json_atomic(path, manifest)


def rewrite_digest(root: Path, shard: str, local: int, image: bytes) -> None:
    """Record `image`'s digest as image `local`'s in the shard's index and the manifest, as if it had been stored
    so at conversion: a replaced image that only its own checks (header, decode) can tell."""

    def put(digests):
        digests[local] = fmt.image_digest(image)
        return digests

    forge_digests(root, put, shard)


def truncate(path: Path, keep: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep)


def scrub_lines(path: Path, start: int, stop: int) -> None:
    """Overwrite bytes [start, stop) of a text file with 'x', keeping its line ends: the same lines, other content
    (blank lines no longer blank, quotes gone), so a reader that parsed its way through them would tell."""
    data = bytearray(Path(path).read_bytes())
    for k in range(start, stop):
        if data[k] not in b"\r\n":
            data[k] = ord("x")
    Path(path).write_bytes(bytes(data))


def flip_bytes(path: Path, offset: int, count: int = 1) -> None:
    """XOR `count` bytes at `offset` with 0xFF."""
    with open(path, "r+b") as f:
        f.seek(offset)
        block = bytearray(f.read(count))
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in block))


def put_record(root: Path, shard: str, local: int, value: bytes | None, *, match_manifest: bool = True) -> None:
    """Overwrite (or delete, value None) one record of a shard in place; by default the manifest is then
    rewritten to match, so size and checksum checks pass and only the record itself is wrong."""
    import lmdb

    env = lmdb.open(str(fmt.shard_path(Path(root), shard)), subdir=True, lock=False)
    with env.begin(write=True) as txn:
        if value is None:
            txn.delete(fmt.encode_key(local))
        else:
            txn.put(fmt.encode_key(local), value)
    env.close()
    if match_manifest:
        rewrite_manifest(root, shard)


def run_python(code: str, *, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter: a reader that dies of a signal must not take pytest with it."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def small_jpeg(width: int = 64, height: int = 48, *, quality: int = 90, seed: int = 0) -> bytes:
    """A baseline JPEG of noise (so its scan data is long enough to damage)."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def forge_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0) claiming width x height: an image-bomb header on small data."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[sof + 9 :]


def corrupt_scan(jpeg: bytes) -> bytes:
    """The JPEG with stray restart markers written into the middle of its entropy-coded data: libjpeg warns
    ("Corrupt JPEG data: premature end of data segment") and pads the rest of the scan, Pillow keeps quiet."""
    sos = jpeg.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big")
    mid = start + (len(jpeg) - 2 - start) // 3
    return jpeg[:mid] + b"\xff\xd3" * 4 + jpeg[mid + 8 :]


def extraneous_before_eoi(jpeg: bytes, count: int = 40) -> bytes:
    """The JPEG with `count` bytes no MCU uses between its scan data and its end marker: libjpeg warns
    "Corrupt JPEG data: N extraneous bytes before marker 0xd9", Pillow decodes it without a word."""
    assert jpeg.endswith(b"\xff\xd9")
    return jpeg[:-2] + bytes(range(1, count + 1)) + b"\xff\xd9"


def inflate_record_size(root: Path, shard: str, local: int) -> None:
    """Make record `local`'s LMDB leaf node claim a value of ~2 GB (its size field's high half set), then
    rewrite the manifest to match: a reader that copies the value runs off the end of the file (SIGBUS)."""
    data = data_file(root, shard)
    raw = bytearray(data.read_bytes())
    at = raw.index(b"\x08\x00" + fmt.encode_key(local))  # mn_ksize = 8 (little-endian), then the key
    raw[at - 4 : at - 2] = b"\xff\x7f"  # mn_hi: the high 16 bits of the value's size
    data.write_bytes(bytes(raw))
    rewrite_manifest(root, shard)
