"""YFCC100M's metadata table as a conversion source: its user tags are the public stand-in for hashtags.

The dataset file is tab-separated, plain or bz2, in one of its two published layouts, told apart by the
column count of the first line (and reported in the source description):
  25 columns: line number, photo id, photo hash, user NSID, user nickname, date taken, date uploaded,
              capture device, title, description, user tags, machine tags, longitude, latitude, accuracy,
              page URL, download URL, license name, license URL, server id, farm id, secret,
              original secret, original extension, photo/video marker;
  23 columns: the same without the line number and the photo hash.
Tags are the user tags (comma separated, URL-encoded with '+' for space), optionally the machine tags too.
Videos (marker 1) are rejected as `video`. Each photo is joined to its image through `images`: a folder of
files named by photo id (or, in the 25-column layout, by photo hash), any extension, at any depth; or
img2dataset tars whose JSON member carries the photo id in `id_field`. A photo without an image is
rejected as missing_file. Memory: the join index (join_index.py) holds ~50 bytes an image, no Python object
per image (tracemalloc, 1,000,000 synthetic images: 52 bytes for files 'ab/cd/<11-digit id>.jpg', 48 for tar
members, ~80 at the peak while it is sorted; the dict of tuples it replaced kept 237 and 313), and a folder,
local or on object storage, is listed one folder (prefix) at a time, streamed in sorted() order of the paths,
not as one sorted list (that list took another 166 bytes an image).

Positions are line order (blank lines skipped); the scan keeps the byte offset of every 65,536th line of a
plain file, so `items(start)` seeks near `start` (a bz2 file is decompressed from its start). A partitioned
conversion (`--parts`, `--engine ray`) saves the join index in OUT/.convert/yfcc-index/ once, at the planning
scan; each part memory-maps it (parts on one machine share its pages) and reads the table from its offsets:
no part lists the images or scans the table again.
"""

from __future__ import annotations

import bz2
import hashlib
import os
import tarfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote_plus

from tagstream.loader.data import storage
from tagstream.tools.convert.inputs.base import RAW_LIMIT, InputKind, Item, KindOptions
from tagstream.tools.convert.inputs.join_index import JoinIndex
from tagstream.tools.convert.inputs.paths import expand, file_size, is_pattern
from tagstream.tools.convert.inputs.tar_reading import DAMAGE, IMAGE_EXTS, TAR_SUFFIXES, open_tar, samples
from tagstream.tools.convert.inputs.text_table import mark_before, numbered_lines

# columns of each layout: photo id, photo hash (None: absent), user tags, machine tags, photo/video marker
LAYOUTS = {
    25: {"id": 1, "hash": 2, "user_tags": 10, "machine_tags": 11, "marker": 24},
    23: {"id": 0, "hash": None, "user_tags": 8, "machine_tags": 9, "marker": 22},
}
INDEX_DIR = "yfcc-index"  # the join index of a partitioned conversion, in OUT/.convert/ (scan_state)
MARK_EVERY = 1 << 16  # lines between two remembered byte offsets of a plain file
OPEN_TARS = 8  # image tars kept open at once (photos come in the table's order, not the tars')


def split_tags(field: str) -> list[str]:
    """'sunset,new+york,caf%C3%A9' -> ['sunset', 'new york', 'café']."""
    return [unquote_plus(t) for t in field.split(",") if t.strip()]


def walk_sorted(top: str, prefix: str = "") -> Iterator[tuple[str, int]]:
    """(path relative to `top`, size) of every file under it, hidden names and linked folders skipped (as
    os.walk), in the order of sorted() over the whole paths: each folder's names are sorted with a subfolder
    as 'name/', which puts its files where their paths sort, since no name holds a '/' ('a.jpg' < 'a/b.jpg'
    < 'a0.jpg')."""
    try:
        with os.scandir(top) as entries:
            names = [e.name + "/" if _is_dir(e) else e.name for e in entries if not e.name.startswith(".")]
    except OSError:  # a folder that cannot be read is skipped, as os.walk does
        return
    for name in sorted(names):
        path = os.path.join(top, name.rstrip("/"))
        if not name.endswith("/"):
            try:
                yield prefix + name, os.stat(path).st_size
            except OSError:  # a dangling link: no image (its photo is rejected as missing)
                continue
        elif not os.path.islink(path):
            yield from walk_sorted(path, prefix + name)


def walk_sorted_remote(url: str, fs, top: str, prefix: str = "") -> Iterator[tuple[str, int]]:
    """walk_sorted for an object store (fsspec): one listing per "folder" (prefix), held while its entries are
    yielded, in the order of sorted() over the whole paths that a recursive find gives (hidden names kept, as
    find keeps them)."""
    entries = storage.retrying(url, lambda: fs.ls(top, detail=True), storage.DEFAULT_RETRY)
    names = []
    for e in entries:
        name = str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
        if e.get("type") == "directory":
            names.append((name + "/", -1))
        elif name:
            names.append((name, int(e.get("size") or 0)))
    for name, size in sorted(names):
        if size < 0:
            yield from walk_sorted_remote(url, fs, f"{top.rstrip('/')}/{name[:-1]}", prefix + name)
        else:
            yield prefix + name, size


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # os.walk counts an entry it cannot stat as a file
        return False


@dataclass(frozen=True)
class YfccOptions(KindOptions):
    """Where the photos' images are, and which tags to take."""

    images: str = ""  # a directory of images named by photo id, or img2dataset tars (file, dir, glob, braces)
    id_field: str = ""  # with tar images: the JSON field of each sample holding the photo id
    yfcc_machine_tags: bool = False  # the machine tags too, not only the user tags


class YfccInput(InputKind):
    """YFCC100M's metadata table joined to its images (see the module docstring)."""

    name = "yfcc"
    title = "YFCC100M metadata"
    options_type = YfccOptions

    def __init__(self, path, options: YfccOptions):
        if not options.images:
            raise ValueError(
                "--format yfcc needs --images: a folder of images named by photo id, or img2dataset tars "
                "(with --id-field naming the JSON field that holds the photo id)"
            )
        local = storage.local_path(options.images)
        if local is not None:  # a rerun from another directory names the same images
            options = replace(options, images=os.path.abspath(local))
        super().__init__(path, options)
        self.spec = str(path)
        self.layout: int | None = None
        self.marks: list[tuple[int, int, int]] = []  # (position, byte offset, lines before it) in a plain file
        self.index: JoinIndex | None = None  # photo id (or hash) -> its image; None until scanned
        self._saved: Path | None = None  # where scan_state saved the index
        self.image_kind = self._image_kind()
        if self.image_kind == "tar" and not options.id_field:
            raise ValueError(
                "--images names tars: give --id-field, the JSON field of each sample that holds the "
                "photo id (img2dataset: save it with --save_additional_columns)"
            )
        self._tars: OrderedDict[str, object] = OrderedDict()

    def describe(self) -> dict:
        o = self.options
        return {
            "images": o.images,
            "images_kind": self.image_kind,
            "id_field": o.id_field,
            "machine_tags": o.yfcc_machine_tags,
        }

    def _image_kind(self) -> str:
        images = self.options.images
        if is_pattern(images) or images.lower().endswith(TAR_SUFFIXES):
            return "tar"
        local = storage.local_path(images)
        if local is not None and not local.is_dir():
            raise ValueError(f"--images {images}: not a folder, a tar or a pattern of tars")
        names = storage.list_files(images)
        return "tar" if any(n.lower().endswith(TAR_SUFFIXES) for n in names) else "dir"

    # ---- the metadata file ----
    @contextmanager
    def _open(self):
        with storage.open_read(self.spec) as raw:
            if raw.peek(3)[:3] == b"BZh":
                with bz2.open(raw, "rb") as f:
                    try:
                        yield f
                    except (EOFError, OSError) as exc:  # bz2's own faults (click prints a bare EOFError as "Aborted!")
                        damaged = isinstance(exc, OSError) and "Invalid data stream" in str(exc)
                        if not (damaged or isinstance(exc, EOFError)):  # a storage or system error stays itself
                            raise
                        why = f"is damaged ({exc})" if damaged else "ends before its end-of-stream marker"
                        raise ValueError(
                            f"{storage.redact(self.spec)}: the bz2 stream {why}: the file is cut short or damaged; "
                            "fetch it again, or decompress what is there (bzip2 -dc FILE > table.tsv) and convert that"
                        ) from None
            else:
                yield raw

    def scan(self) -> tuple[int, str]:
        h = hashlib.sha256()
        count = 0
        self.marks = []
        with self._open() as f:
            plain = not isinstance(f, bz2.BZ2File)
            lineno, at = 0, 0
            for data in f:
                h.update(data)
                if data.strip():
                    if count == 0:
                        self.layout = len(data.rstrip(b"\r\n").split(b"\t"))
                        if self.layout not in LAYOUTS:
                            raise ValueError(
                                f"{storage.redact(self.spec)}: the first line has {self.layout} tab-separated "
                                f"columns; a YFCC100M dataset file has 25 (or 23, without line number and hash)"
                            )
                    if plain and count % MARK_EVERY == 0:
                        self.marks.append((count, at, lineno))
                    count += 1
                lineno += 1
                at += len(data)
        h.update(f"\0layout {self.layout}\0".encode())
        self.index = self._index_images(h)
        return count, h.hexdigest()

    def scan_state(self, store: Path | None = None) -> dict:
        """The table's layout and remembered offsets, and (with `store`, a folder every part reads: OUT/.convert/)
        the join index, saved there once and memory-mapped by the parts instead of listing the images again."""
        if self.index is None:
            raise RuntimeError("scan() the source before asking for its scan state")
        state: dict = {"layout": self.layout, "marks": [list(m) for m in self.marks]}
        if store is not None:
            folder = Path(store) / INDEX_DIR
            if self._saved != folder:
                self.index.save(folder)
                self._saved = folder
            state["index"] = INDEX_DIR
        return state

    def load_scan_state(self, state: dict, store: Path | None = None) -> None:
        """A part's source from the planning scan's state: the table is not read again; the join index is
        mapped from `store` where the planning scan saved it, else built again from the images."""
        self.layout = int(state["layout"])
        self.marks = [tuple(int(v) for v in m) for m in state["marks"]]
        saved = Path(store) / state["index"] if store is not None and state.get("index") else None
        if saved is not None and (saved / "index.json").is_file():
            self.index = JoinIndex.load(saved)
        else:
            self.index = self._index_images(hashlib.sha256())

    def items(self, start: int = 0) -> Iterator[Item]:
        if self.index is None:
            self.scan()
        with self._open() as f:
            for pos, lineno, data in numbered_lines(f, start, mark_before(self.marks, start)):
                yield self._item(pos, lineno, data)

    def _item(self, pos: int, lineno: int, data: bytes) -> Item:
        try:
            text = data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            return Item(
                pos, lineno, data.decode("utf-8", "replace")[:RAW_LIMIT], None, (), "", "line is not valid UTF-8"
            )
        raw = text[:RAW_LIMIT]
        cols = text.split("\t")
        if len(cols) != self.layout:
            return Item(
                pos, lineno, raw, None, (), "", f"line has {len(cols)} columns, the file's layout has {self.layout}"
            )
        c = LAYOUTS[self.layout]
        photo = cols[c["id"]].strip()
        if not photo:
            return Item(pos, lineno, raw, None, (), "", "empty photo id")
        if cols[c["marker"]].strip() == "1":
            return Item(pos, lineno, raw, None, (), photo, f"photo {photo} is a video (marker 1)", "video")
        tags = split_tags(cols[c["user_tags"]])
        if self.options.yfcc_machine_tags:
            tags += split_tags(cols[c["machine_tags"]])
        keys = [photo] + ([cols[c["hash"]].strip()] if c["hash"] is not None else [])
        found = next((f for f in map(self.index.get, keys) if f is not None), None)
        if found is None:
            return Item(
                pos,
                lineno,
                raw,
                None,
                (),
                photo,
                f"no image for photo {photo} in {self.options.images}",
                "missing_file",
            )
        if found[0] == "file":
            path = storage.join(self.options.images, found[1])
            outside = self._link_outside(path)
            if outside is not None:
                return Item(pos, lineno, raw, path, (), photo, outside, "symlink")
            return Item(pos, lineno, raw, path, tuple(tags), photo)
        _, tar, offset, size, ext = found
        where = f"{tar}:{photo}.{ext}"
        if size > self.item_limit:  # the tar header said so: not read
            error = f"image member of {size} bytes (over --max-file-bytes {self.item_limit}): not read"
            return Item(pos, lineno, raw, where, (), photo, error, "file_too_large")
        if storage.local_path(tar) is not None:  # the worker reads it at its offset
            return Item(
                pos, lineno, raw, where, tuple(tags), photo, member=(str(storage.local_path(tar)), offset, size)
            )
        return Item(pos, lineno, raw, where, tuple(tags), photo, data=self._read_member(tar, offset, size))

    def _link_outside(self, path: str) -> str | None:
        """Why a local image is refused: a symbolic link resolving outside the images folder (as ImageFolder
        refuses one outside SRC); None for anything else."""
        if storage.local_path(path) is None or not os.path.islink(path):
            return None
        root = os.path.realpath(self.options.images)
        target = os.path.realpath(path)
        if os.path.commonpath([root, target]) == root:
            return None
        return f"{path} is a symbolic link to {target}, outside --images {self.options.images}: not followed"

    # ---- the images ----
    def _index_images(self, h) -> JoinIndex:
        if self.image_kind == "dir":
            index = JoinIndex("file")
            for rel, size in self._listing():
                h.update(f"{rel}\0{size}\n".encode("utf-8", "surrogateescape"))
                index.add_file(rel.rsplit("/", 1)[-1].split(".", 1)[0], rel)
            return index.freeze()
        index = JoinIndex("tar")
        compressed: list[str] = []
        for tar in expand(self.options.images, TAR_SUFFIXES):
            size = file_size(tar)
            h.update(f"{tar}\0{size}\n".encode("utf-8", "surrogateescape"))
            if size is None:  # a missing tar of a brace pattern: its photos are rejected as missing
                continue
            try:
                with open_tar(tar, stream=storage.local_path(tar) is None) as tf:
                    if tf.compressed:
                        compressed.append(tar)
                        continue
                    for s in samples(tf, read=frozenset({"json"}), hasher=h):
                        self._index_sample(index, tar, s)
            except (storage.StorageError, FileNotFoundError, PermissionError):
                raise
            except DAMAGE as exc:  # the images after the damage are missing: their photos are rejected as such
                h.update(f"damaged {type(exc).__name__}\n".encode())
        if compressed:
            raise ValueError(
                f"{storage.redact(compressed[0])}: images in a compressed tar cannot be read by position; "
                "decompress the tars first"
            )
        return index.freeze()

    def _index_sample(self, index: JoinIndex, tar: str, s) -> None:
        import json

        ext = next((e for e in IMAGE_EXTS if e in s.members), None)
        meta = s.members.get("json")
        if ext is None or not isinstance(meta, bytes) or not isinstance(s.members[ext], tarfile.TarInfo):
            return
        try:
            photo = json.loads(meta).get(self.options.id_field)
        except (ValueError, AttributeError, RecursionError):  # a member too deep for json is no photo's
            return
        if isinstance(photo, (str, int)) and not isinstance(photo, bool):
            info = s.members[ext]
            index.add_member(str(photo), tar, info.offset_data, info.size, ext)

    def _listing(self) -> Iterator[tuple[str, int]]:
        """(path relative to the images folder, size) of every file under it, sorted by path, streamed one
        folder (or object-store prefix) at a time."""
        images = self.options.images
        local = storage.local_path(images)
        if local is not None:
            return walk_sorted(os.fspath(local))
        fs, path = storage.filesystem(images)
        return walk_sorted_remote(images, fs, path.rstrip("/"))

    def _read_member(self, tar: str, offset: int, size: int) -> bytes:
        f = self._tars.pop(tar, None) or storage.open_read(tar, block_size=1 << 20)
        self._tars[tar] = f
        while len(self._tars) > OPEN_TARS:
            self._tars.popitem(last=False)[1].close()
        f.seek(offset)
        return f.read(size)
