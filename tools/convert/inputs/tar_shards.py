"""WebDataset / img2dataset tar shards as a conversion source, read in order and never unpacked to disk.

A remote or compressed tar is streamed (tarfile "r|"; compressed ones decompressed here), the images' bytes
carried by the Items. A local plain tar is walked by its headers (tarfile "r:", the image data skipped by
seeking) and each image handed to the workers as (tar, offset, size), which they read themselves: the
converter's one main process then moves no image bytes but the results'.

A sample is a run of consecutive members with the same key (the member name up to the first dot of its
basename, folders included), as webdataset groups them: `000123.jpg` + `000123.json` + `000123.txt`. The
image is the jpg/jpeg/png/webp (or gif/bmp/tiff) member; tags come from the JSON member's `tags_field` (a list, or a comma or
space separated string) and the #hashtags of the caption (the .txt member, else the JSON `caption_field`);
the source id is the key or the JSON `id_field`. img2dataset's failed downloads (JSON `status` other than
"success"), samples without an image, and the unreadable rest of a damaged tar become rejects with a reason.

Positions: the scan walks every tar's headers once (seeking over the data of a local uncompressed tar; a
remote or compressed one is streamed) and keeps each tar's sample count, so `items(start)` opens only the
tar holding `start` and skips to it inside that tar. A tar damaged after k samples counts k + 1 inputs (the
last one is the reject naming the damage); a missing tar of a brace pattern counts 1.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tagstream.loader.data import storage
from tagstream.tools.convert.inputs.base import RAW_LIMIT, InputKind, Item, KindOptions, utf8_ok
from tagstream.tools.convert.inputs.paths import display_name, expand, file_size
from tagstream.tools.convert.inputs.tag_text import caption_hashtags, split_tag_cell

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")  # compressed tars are streamed; only plain ones are seekable on resume
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")  # preferred first when a sample holds several
TEXT_EXTS = frozenset(("json", "txt"))
READ_EXTS = TEXT_EXTS | frozenset(IMAGE_EXTS)
MEMBER_LIMIT = 1 << 30  # a member larger than this is not read into memory: its sample is rejected as too large
# what a damaged tar (or a damaged compressed stream) raises while being read
DAMAGE = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError)


def split_key(name: str) -> tuple[str, str]:
    """'dir/000123.seg.png' -> ('dir/000123', 'seg.png'): the WebDataset key and extension (lower case)."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :].lower()


@dataclass
class Sample:
    key: str
    number: int  # 0-based position among the tar's samples
    members: dict[str, bytes | tarfile.TarInfo]  # extension -> bytes (read) or the member's header (not read)


class _EndAwareTarInfo(tarfile.TarInfo):
    """tarfile takes an unreadable header after the first one for the end of the archive; this remembers on
    the TarFile which header fault ended it, so a damaged tar is not read as a shorter one."""

    @classmethod
    def fromtarfile(cls, tf):
        try:
            return super().fromtarfile(tf)
        except tarfile.HeaderError as exc:
            tf.end_fault = type(exc).__name__
            raise


# compressed tars are decompressed here rather than by tarfile, whose stream mode takes a cut stream for the end
_DECOMPRESSORS = (
    (b"\x1f\x8b", lambda f: gzip.GzipFile(fileobj=f, mode="rb")),
    (b"BZh", lambda f: bz2.BZ2File(f, "rb")),
    (b"\xfd7zXZ\x00", lambda f: lzma.LZMAFile(f, "rb")),
)


@contextmanager
def open_tar(path: str, *, stream: bool):
    """A TarFile over a local path or URL: streamed ("r|", data read in order) or seekable ("r:", headers read,
    data skipped by seeking: the scan of a local plain tar). Compressed tars are always streamed."""
    with storage.open_read(path) as raw:
        head = raw.peek(6)[:6]
        opener = next((o for magic, o in _DECOMPRESSORS if head.startswith(magic)), None)
        if opener is None:
            with tarfile.open(fileobj=raw, mode="r|" if stream else "r:", tarinfo=_EndAwareTarInfo) as tf:
                tf.seekable, tf.compressed = not stream, False
                yield tf
        else:
            with opener(raw) as plain, tarfile.open(fileobj=plain, mode="r|", tarinfo=_EndAwareTarInfo) as tf:
                tf.seekable, tf.compressed = False, True
                yield tf


def end_problem(tf: tarfile.TarFile) -> str | None:
    """Why a tar whose members were all read did not end properly (a damaged or cut header), or None."""
    fault = getattr(tf, "end_fault", None)
    if fault in (None, "EOFHeaderError", "EmptyHeaderError"):  # the end-of-archive zero block, or end of file
        return None
    return f"no valid tar header at byte {tf.offset} ({fault}): the rest of the tar cannot be read"


def samples(tf: tarfile.TarFile, *, read: frozenset[str] = frozenset(), skip: int = 0, hasher=None) -> Iterator[Sample]:
    """The samples of an open tar, in order, with the bytes of their members whose extension is in `read`
    from sample `skip` on (the others as headers). `hasher` (hashlib) is fed every member's name, size, mtime."""
    key: str | None = None
    members: dict[str, bytes | tarfile.TarInfo] = {}
    number = 0
    for info in tf:
        if hasher is not None:
            hasher.update(f"{info.name}\0{info.size}\0{info.mtime}\0{info.type!r}\n".encode("utf-8", "surrogateescape"))
        if not info.isfile():
            continue
        k, ext = split_key(info.name)
        if k != key:
            if key is not None:
                yield Sample(key, number, members)
                number += 1
            key, members = k, {}
        if ext in members:  # a repeated extension inside one sample: the first one counts
            continue
        wanted = number >= skip and ext in read and info.size <= MEMBER_LIMIT
        members[ext] = tf.extractfile(info).read() if wanted else info
    if key is not None:
        yield Sample(key, number, members)


@dataclass
class TarScan:
    """What the scan learned about one tar."""

    path: str
    size: int | None  # None: no such file
    samples: int
    damage: str | None  # why the tar (or its rest after `samples` samples) cannot be read

    @property
    def inputs(self) -> int:
        return self.samples + (1 if self.damage is not None else 0)


def scan_tar(path: str, hasher) -> TarScan:
    """Count one tar's samples (and find damage), feeding its member list to `hasher`."""
    size = file_size(path)
    hasher.update(f"{path}\0{size}\n".encode("utf-8", "surrogateescape"))
    if size is None:
        return TarScan(path, None, 0, "no such file")
    count = 0
    try:
        with open_tar(path, stream=storage.local_path(path) is None) as tf:
            for _ in samples(tf, hasher=hasher):
                count += 1
            damage = end_problem(tf)
        if damage is not None and count:  # the sample being read when the damage began may miss members
            count -= 1
    except (storage.StorageError, FileNotFoundError, PermissionError):
        raise
    except DAMAGE as exc:
        damage = f"{type(exc).__name__}: {exc}"
    hasher.update(f"{count}\0{damage}\n".encode())
    return TarScan(path, size, count, damage)


SCAN_THREADS = 8  # tars scanned at once


class _Fed(list):
    """What scan_tar feeds its hasher, kept to be fed to the real one in file order."""

    update = list.append


def _in_order(files: list[str], threads: int) -> Iterator[tuple[TarScan, list[bytes]]]:
    """(scan, hasher input) of each tar in file order, scanned `threads` at a time; at most 2 x threads results
    wait for an earlier tar (a tar's member list is ~60 bytes a member)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(path: str) -> tuple[TarScan, list[bytes]]:
        fed = _Fed()
        return scan_tar(path, fed), fed

    with ThreadPoolExecutor(max(1, min(threads, len(files)))) as pool:
        window = [pool.submit(one, path) for path in files[: 2 * threads]]
        for nxt in range(len(window), len(files) + len(window)):
            done = window.pop(0).result()  # the first fault in file order is raised
            if nxt < len(files):
                window.append(pool.submit(one, files[nxt]))
            yield done


@dataclass(frozen=True)
class TarOptions(KindOptions):
    """Where a sample's JSON member holds tags, caption, id and download status."""

    tags_field: str = "tags"  # the JSON member's field with tags (a list, or a comma/space separated string)
    caption_field: str = "caption"  # JSON field with a caption, when the sample has no .txt member
    id_field: str = ""  # JSON field with the source id ('' = the sample key)
    status_field: str = "status"  # img2dataset's download status; anything but "success" is rejected


class TarInput(InputKind):
    """WebDataset/img2dataset tars (see the module docstring)."""

    name = "tar"
    title = "WebDataset/img2dataset tars"
    options_type = TarOptions
    takes = "either"
    suffixes = TAR_SUFFIXES

    def __init__(self, path, options: TarOptions):
        super().__init__(path, options)
        self.spec = str(path)
        self.tars: list[TarScan] | None = None

    @classmethod
    def claims_folder(cls, folder: Path) -> bool:
        """A folder with tars at its top level."""
        return any(p.is_file() and p.name.lower().endswith(TAR_SUFFIXES) for p in folder.iterdir())

    def describe(self) -> dict:
        o = self.options
        return {
            "fields": {
                "tags": o.tags_field,
                "caption": o.caption_field,
                "id": o.id_field or "(the key)",
                "status": o.status_field,
            }
        }

    def scan(self, threads: int = SCAN_THREADS) -> tuple[int, str]:
        """Count and fingerprint every tar, `threads` tars at a time (a remote tar is read whole to be counted:
        the reads overlap); the fingerprint is fed in file order, so it equals a one-at-a-time scan's."""
        files = expand(self.spec, TAR_SUFFIXES)
        h = hashlib.sha256()
        self.tars = []
        for scanned, fed in _in_order(files, threads):
            for data in fed:
                h.update(data)
            self.tars.append(scanned)
        return sum(t.inputs for t in self.tars), h.hexdigest()

    def scan_state(self, store=None) -> dict:  # store: unused (the state is small)
        if self.tars is None:
            raise RuntimeError("scan() the source before asking for its scan state")
        return {"tars": [[t.path, t.size, t.samples, t.damage] for t in self.tars]}

    def load_scan_state(self, state: dict, store=None) -> None:
        self.tars = [TarScan(*row) for row in state["tars"]]

    def items(self, start: int = 0) -> Iterator[Item]:
        if self.tars is None:
            self.scan()
        names = [t.path for t in self.tars]
        base = 0
        for tar in self.tars:
            if start < base + tar.inputs:
                yield from self._tar_items(tar, base, max(0, start - base), display_name(tar.path, names))
            base += tar.inputs

    def _tar_items(self, tar: TarScan, base: int, skip: int, name: str) -> Iterator[Item]:
        produced = skip
        error = tar.damage
        if produced < tar.samples:
            try:
                # a local plain tar is walked by its headers: the workers read each image member themselves
                with open_tar(tar.path, stream=storage.local_path(tar.path) is None) as tf:
                    by_reference = str(storage.local_path(tar.path)) if tf.seekable else None
                    for sample in samples(tf, read=TEXT_EXTS if by_reference else READ_EXTS, skip=skip):
                        if sample.number < skip:
                            continue
                        if produced >= tar.samples:  # more than the scan saw: left to a rerun, which refuses
                            break
                        yield self._item(base + produced, name, sample, by_reference)
                        produced += 1
            except (storage.StorageError, FileNotFoundError, PermissionError):
                raise
            except DAMAGE as exc:
                error = error or f"{type(exc).__name__}: {exc}"
        for k in range(produced, tar.inputs):  # the unreadable rest, as many inputs as the scan counted
            what = f"{name}: sample {k + 1}" if k < tar.samples else name
            reason = "missing_file" if tar.size is None else "damaged_file"
            yield Item(base + k, k + 1, what, what, (), "", error or "the tar ended early", reason)

    def _item(self, pos: int, name: str, s: Sample, tar: str | None) -> Item:
        o = self.options
        where = f"{name}:{s.key}"
        line = s.number + 1
        meta: dict = {}
        raw = where
        if "json" in s.members:
            data = s.members["json"]
            if isinstance(data, tarfile.TarInfo):
                return Item(pos, line, raw, where, (), "", f"JSON member of {data.size} bytes is too large")
            try:
                raw = data.decode("utf-8")[:RAW_LIMIT]
                meta = json.loads(data)
            except ValueError as exc:
                return Item(
                    pos,
                    line,
                    data.decode("utf-8", "replace")[:RAW_LIMIT],
                    where,
                    (),
                    "",
                    f"{s.key}.json is not JSON: {exc}",
                )
            if not isinstance(meta, dict):
                return Item(
                    pos, line, raw, where, (), "", f"{s.key}.json is a JSON {type(meta).__name__}, expected an object"
                )
        status = meta.get(o.status_field) if o.status_field else None
        if isinstance(status, str) and status != "success":
            detail = meta.get("error_message") or "no error message"
            return Item(pos, line, raw, where, (), "", f"{o.status_field} {status!r}: {detail}", "download_failed")
        ext = next((e for e in IMAGE_EXTS if e in s.members), None)
        if ext is None:
            have = ", ".join(f".{e}" for e in s.members) or "none"
            return Item(
                pos,
                line,
                raw,
                where,
                (),
                "",
                f"sample {s.key} has no {'/'.join(IMAGE_EXTS)} member (members: {have})",
                "no_image",
            )
        image = s.members[ext]
        member = None
        if isinstance(image, tarfile.TarInfo) and tar is not None and image.size <= MEMBER_LIMIT:
            member, image = (tar, image.offset_data, image.size), None
        elif isinstance(image, tarfile.TarInfo):
            return Item(
                pos,
                line,
                raw,
                f"{where}.{ext}",
                (),
                "",
                f"image member of {image.size} bytes (over {MEMBER_LIMIT})",
                "file_too_large",
            )
        tags = meta.get(o.tags_field, []) if o.tags_field else []
        if isinstance(tags, str):
            tags = split_tag_cell(tags)
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return Item(pos, line, raw, where, (), "", f"{o.tags_field!r} must be a list of strings or a string")
        caption = meta.get(o.caption_field, "") if o.caption_field else ""
        if "txt" in s.members:
            text = s.members["txt"]
            try:
                caption = text.decode("utf-8") if isinstance(text, bytes) else ""
            except UnicodeDecodeError:
                return Item(pos, line, raw, where, (), "", f"{s.key}.txt is not valid UTF-8")
        if not isinstance(caption, str):
            return Item(pos, line, raw, where, (), "", f"{o.caption_field!r} must be a string")
        sid = s.key
        if o.id_field:
            value = meta.get(o.id_field)
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                return Item(
                    pos, line, raw, where, (), "", f"no {o.id_field!r} (a string or an integer) in {s.key}.json"
                )
            sid = str(value)
        if not all(utf8_ok(t) for t in (caption, sid, *tags)):
            return Item(
                pos, line, raw, where, (), "", "the sample holds text that is not valid Unicode (a lone surrogate)"
            )
        raw_tags = tuple(tags) + tuple(caption_hashtags(caption))
        return Item(pos, line, raw, f"{where}.{ext}", raw_tags, sid, data=image, member=member)
