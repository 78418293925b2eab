"""The on-disk dataset format in one place: names, version, key schema, record and index layout.

A dataset is a directory:

    manifest.json      written last; format name + version, image count, shards (name, images,
                       bytes, sha256 of data.mdb, "index": sha256 of each index array), "files": size and
                       sha256 of tags.tsv and rejects.jsonl, source description, tool version
                       (version 1, still read: no "index" or "files"; loader/data/checksums.py)
    tags.tsv           raw tag table: id <TAB> canonical text <TAB> count, sorted by id
    shards/NNNNN.lmdb  LMDB environments (subdir=True: data.mdb inside); key = local index as
                       8-byte big-endian (so LMDB's byte order is index order); value = msgpack map
                       {"image": bytes (baseline JPEG), "tags": [raw tag id, ...], "source": str}
    index/             per-shard arrays, plain .npy files so they memory-map:
                       index/NNNNN.tag_offsets.npy  int64 (n+1)   CSR offsets into tag_ids
                       index/NNNNN.tag_ids.npy      int32 (nnz)   raw tag ids, per image sorted, unique
                       index/NNNNN.width.npy        int32 (n)
                       index/NNNNN.height.npy       int32 (n)
                       index/NNNNN.phash.npy        uint64 (n)    64-bit DCT perceptual hash (of the content box)
                       index/NNNNN.content_box.npy  uint64 (n)    optional: the box inside uniform borders,
                                                      16 bits each, left<<48 | top<<32 | right<<16 | bottom
                                                      (pack_boxes); absent (older datasets) = whole image
                       index/NNNNN.digest.npy       uint64 (n)    optional: 64-bit BLAKE2b of the stored image
                                                      bytes (image_digest); absent in older datasets. A match
                                                      names a candidate only: de-dup's exact check confirms
                                                      it by comparing the bytes themselves
    vocab/NAME/        a vocabulary, built from the raw tags without touching shards:
                       classes.tsv   class id <TAB> name <TAB> count <TAB> members (space-joined tags)
                       label_offsets.npy  int64 (N+1)  per-image class labels, CSR over all images
                       labels.npy         int32 (nnz)  class ids, per image sorted, unique
                       vocab.json    name, classes, images, options used; report.json  the build report
                       checksums.json  size and sha256 of each file above (loader/data/checksums.py)
    masks/NAME.npy     bool (N,), True = excluded from sampling (never deletes data); masks/NAME.json its
                       size and sha256
    rejects.jsonl      one JSON object per input not converted: {"line", "image", "reason", ...}
    .convert/          conversion state (source, options, per-shard progress) for resuming and for
                       refusing another source; never read at run time

All dtypes are little-endian and explicit ("<i8", "<i4", "<u8") so a dataset written on one machine
reads identically on any other. Global image index = shard start + local index, shards in manifest
order; shard starts are the cumulative image counts of the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "tagstream"
FORMAT_VERSION = 2  # 2: the manifest covers the index arrays, tags.tsv and rejects.jsonl by checksums
READABLE_VERSIONS = (1, 2)  # version 1 still reads: its index and tags are simply not covered

MANIFEST = "manifest.json"
TAGS = "tags.tsv"
REJECTS = "rejects.jsonl"
SHARDS_DIR = "shards"
INDEX_DIR = "index"
VOCAB_DIR = "vocab"
MASKS_DIR = "masks"

KEY_BYTES = 8
SHARD_NAME_WIDTH = 5

# per-shard index arrays: name -> dtype (explicit little-endian, see module docstring)
INDEX_ARRAYS: dict[str, str] = {"tag_offsets": "<i8", "tag_ids": "<i4", "width": "<i4", "height": "<i4", "phash": "<u8"}
# per-shard index arrays a dataset may lack (written before they existed): name -> dtype; one per image
OPTIONAL_INDEX_ARRAYS: dict[str, str] = {"content_box": "<u8", "digest": "<u8"}


def index_dtype(name: str) -> str:
    """The dtype of index array `name`, required or optional; ValueError naming the known ones."""
    dtype = INDEX_ARRAYS.get(name) or OPTIONAL_INDEX_ARRAYS.get(name)
    if dtype is None:
        raise ValueError(f"unknown index array {name!r}; known: {sorted(INDEX_ARRAYS) + sorted(OPTIONAL_INDEX_ARRAYS)}")
    return dtype


def pack_boxes(boxes: np.ndarray) -> np.ndarray:
    """(n, 4) (left, top, right, bottom) in [0, MAX_SIDE] -> (n,) uint64, as index/NNNNN.content_box.npy holds them."""
    b = np.asarray(boxes, np.uint64).reshape(-1, 4)
    return (b[:, 0] << np.uint64(48)) | (b[:, 1] << np.uint64(32)) | (b[:, 2] << np.uint64(16)) | b[:, 3]


def unpack_boxes(packed: np.ndarray) -> np.ndarray:
    """(n,) uint64 content boxes -> (n, 4) int64 (left, top, right, bottom)."""
    p = np.asarray(packed, np.uint64)[:, None] >> np.array([48, 32, 16, 0], np.uint64)
    return (p & np.uint64(0xFFFF)).astype(np.int64)


def image_digest(image: bytes | memoryview) -> int:
    """A stored image's entry of index/NNNNN.digest.npy: the 64-bit BLAKE2b of its bytes as an unsigned integer.

    64 bits, not 128: a match is confirmed by comparing the images' bytes (tools/dedup/exact.py), so a collision
    costs one extra read and never a false pair; 8 bytes an image keeps the array as small as the pHash's."""
    return int.from_bytes(hashlib.blake2b(image, digest_size=8).digest(), "little")


class FormatError(Exception):
    """A structural fault of a dataset: unknown format/version, missing or damaged files."""


# names of vocabularies, masks and shards: a file or directory name inside the dataset, never a path
# (no "/", no "..", no leading dot, no trailing newline: fullmatch, because `$` also matches before "\n")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

# the decode bound of every reader (index width x height, JPEG header): Pillow's own default guard;
# conversion stores at most --max-pixels (same default), so a larger image in a dataset is damage
MAX_PIXELS = 89_478_485
MAX_SIDE = 65_535  # JPEG's own limit on a side


def check_name(name: object, what: str) -> str:
    """A vocabulary/mask/shard name, or ValueError naming it and the allowed form."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{what} name {name!r} is not allowed: letters, digits, '.', '_', '-', starting with a letter or "
            "digit, at most 128 characters (a name inside the dataset, never a path)"
        )
    return name


def check_image_sizes(width: np.ndarray, height: np.ndarray, where: str) -> None:
    """Index widths and heights within [1, MAX_PIXELS] pixels: FormatError naming the first bad entry, so
    no decoder is asked for a window of an impossible image (DALI allocates what the index implies)."""
    w = np.asarray(width, dtype=np.int64)
    h = np.asarray(height, dtype=np.int64)
    bad = (w < 1) | (h < 1) | (w > MAX_SIDE) | (h > MAX_SIDE) | (w * h > MAX_PIXELS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FormatError(
            f"{where}: image {i} has width {int(w[i])} and height {int(h[i])} in the index "
            f"(each must be in [1, {MAX_SIDE}] and width x height <= {MAX_PIXELS} pixels)"
        )


def open_image(data: bytes) -> Any:
    """A stored image opened with Pillow (lazily: nothing decoded yet), its header checked against MAX_PIXELS
    first (Pillow itself refuses only past twice its own limit, and decodes anything below it): ValueError
    for a larger image, OSError (PIL.UnidentifiedImageError) for bytes no format recognises."""
    import io
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ValueError(str(exc)) from None
    if img.width * img.height > MAX_PIXELS:
        img.close()
        raise ValueError(f"its header claims {img.width} x {img.height} pixels, over the limit of {MAX_PIXELS}")
    return img


def encode_key(local_index: int) -> bytes:
    """LMDB key of an image: its index within the shard, fixed-width big-endian."""
    return int(local_index).to_bytes(KEY_BYTES, "big")


def decode_key(key: bytes) -> int:
    return int.from_bytes(key, "big")


def shard_name(shard: int) -> str:
    return f"{shard:0{SHARD_NAME_WIDTH}d}"


def shard_path(root: Path, name: str) -> Path:
    return Path(root) / SHARDS_DIR / f"{name}.lmdb"


def index_path(root: Path, name: str, array: str) -> Path:
    return Path(root) / INDEX_DIR / f"{name}.{array}.npy"


def mask_path(root: Path, name: str) -> Path:
    return Path(root) / MASKS_DIR / f"{check_name(name, 'mask')}.npy"


MAP_SIZE = 1 << 40  # a writer's address space only: without writemap the file grows as pages are written


def open_env(path: Path, *, write: bool = False) -> Any:
    """The one way a shard's LMDB environment is opened: read-only and lock-free for readers (shards never
    change once written), or fresh for a writer (zero-initialised pages, so the same records give the
    same bytes). py-lmdb environments must not cross a fork: open them in the process that uses them."""
    import lmdb

    if write:
        return lmdb.open(str(path), map_size=MAP_SIZE, subdir=True, lock=False, meminit=True, readahead=False)
    return lmdb.open(str(path), subdir=True, readonly=True, lock=False, readahead=False, max_readers=512)


_LMDB_MAGIC = 0xBEEFC0DE
_LMDB_META = struct.Struct(
    "<II16x I 92x Q Q"
)  # at byte 16 of a meta page: magic, version, page size, last page, txn id


def lmdb_file_problem(path: Path) -> str | None:
    """What is wrong with an LMDB data.mdb that LMDB itself would not say before crashing, or None.

    LMDB trusts its newest meta page (two at the front of the file): if its last page lies beyond the end
    of the file, reads there hit unmapped memory and the process dies with SIGBUS instead of an error.
    Reading the two meta pages (the layout of liblmdb 0.9's MDB_meta on 64-bit) costs two small reads."""
    try:
        with open(path, "rb") as f:
            head = f.read(160)
            size = os.fstat(f.fileno()).st_size
            metas = []
            if len(head) == 160:
                page = _LMDB_META.unpack_from(head, 16)[2]
                f.seek(page if 512 <= page <= 1 << 16 else 4096)
                metas = [_LMDB_META.unpack_from(head, 16), _LMDB_META.unpack_from(f.read(160).ljust(160, b"\0"), 16)]
    except OSError as exc:
        return f"cannot be read ({exc})"
    valid = [m for m in metas if m[0] == _LMDB_MAGIC and m[2] >= 512 and m[2] & (m[2] - 1) == 0]
    if not valid:
        return "is not an LMDB file (no valid meta page)"
    _, _, page, last, _ = max(valid, key=lambda m: m[4])
    if (last + 1) * page > size:
        return f"is cut short: LMDB's meta page says {(last + 1) * page} bytes ({last + 1} pages), the file has {size}"
    return None


def pack_record(image: bytes, tags: list[int], source: str) -> bytes:
    import msgpack

    return msgpack.packb({"image": image, "tags": [int(t) for t in tags], "source": source}, use_bin_type=True)


def unpack_record(value: bytes) -> dict[str, Any]:
    """Parse a record; raises FormatError (not a msgpack internals error) on anything malformed."""
    import msgpack

    try:
        rec = msgpack.unpackb(value, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise FormatError(f"record does not parse as msgpack: {exc}") from exc
    if not isinstance(rec, dict) or not isinstance(rec.get("image"), bytes) or not isinstance(rec.get("tags"), list):
        raise FormatError("record is not a map with 'image' bytes and a 'tags' list")
    return rec


_IMAGE_HEAD = b"\x83\xa5image"  # pack_record's map: 3 entries, "image" first (msgpack keeps the dict's order)
_BIN_LENGTH_BYTES = {0xC4: 1, 0xC5: 2, 0xC6: 4}  # msgpack bin 8 / bin 16 / bin 32
_BIN32_HEAD = struct.Struct(">8sI")  # the head of a record whose image is a bin 32 (over 64 KiB: most photos)


def image_span(value: bytes | memoryview) -> tuple[int, int] | None:
    """(offset, length) of the image bytes inside a record laid out as pack_record writes it, found
    without parsing the rest (so the image can be handed on as a view, uncopied); None for any other
    layout or a length past the value's end, which the caller then parses with unpack_record."""
    if len(value) >= 12:  # the common case in one C call (this runs per sample on the GPU path: docs/costs.md)
        head, length = _BIN32_HEAD.unpack_from(value)
        if head == _IMAGE_HEAD + b"\xc6":
            return (12, length) if 12 + length <= len(value) else None
    head = bytes(value[:12])
    if head[:7] != _IMAGE_HEAD or len(head) < 8 or head[7] not in _BIN_LENGTH_BYTES:
        return None
    start = 8 + _BIN_LENGTH_BYTES[head[7]]
    if len(head) < start:
        return None
    length = int.from_bytes(head[8:start], "big")
    return (start, length) if start + length <= len(value) else None


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_text_atomic(path: Path, text: str | Iterable[str]) -> None:
    """Write text (a string, or pieces streamed from an iterable) to a temporary name, fsync, rename: readers
    never see half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines([text] if isinstance(text, str) else text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def json_text(obj: Any) -> str:
    """obj as the indented, key-sorted JSON text every JSON file of a dataset holds."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def write_json_atomic(path: Path, obj: Any) -> None:
    """write_text_atomic of obj as indented, key-sorted JSON."""
    write_text_atomic(path, json_text(obj))


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename) to disk, so a completed file survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/tagstream/datasets (~/.cache/tagstream/datasets)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tagstream" / "datasets"


def stamp_dir(cache_dir: str | Path | None = None) -> Path:
    """Where a machine's verification stamps of local shards go (loader/data/checksums.check_once): under
    the user's cache directory when one is given (CACHE_DIR/verified), else beside the default cache
    ($XDG_CACHE_HOME/tagstream/verified, ~/.cache/tagstream/verified)."""
    return Path(cache_dir) / "verified" if cache_dir else default_cache_dir().parent / "verified"
