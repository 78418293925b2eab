"""Reading a WebDataset tar, local or a URL, plain or compressed, as samples: the grouping of its members by key
and the bounds each member is read under (bounds.py), shared by tar inputs and YFCC's tar images.

A sample is a run of consecutive members with the same key (the member name up to the first dot of its basename,
folders included), as webdataset groups them: `000123.jpg` + `000123.json` + `000123.txt`. A member's size comes
from its header: a member over its bound (an image over the item limit, a .json/.txt over TEXT_MEMBER_LIMIT) is
never read, only its header kept. A sample holding one extension twice, or more than MEMBERS_PER_SAMPLE
members, keeps a problem and is rejected whole. tarfile's list of every header it has read is emptied as the
walk goes (10^6 members would hold ~2 GB of headers), and compressed streams are decompressed here in
tarfile's blocks, never whole.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tagstream.loader.data import storage
from tagstream.tools.convert.inputs.bounds import ITEM_LIMIT, MEMBERS_PER_SAMPLE, TEXT_MEMBER_LIMIT

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")  # compressed tars are streamed; only plain ones are seekable on resume
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")  # preferred first when a sample holds several
TEXT_EXTS = frozenset(("json", "txt"))
READ_EXTS = TEXT_EXTS | frozenset(IMAGE_EXTS)
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
    problem: tuple[str, str] | None = None  # (reason, detail) when the sample as a whole is refused


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


def _headers(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The tar's headers in order, none kept by tarfile (its `members` list would hold every one)."""
    while (info := tf.next()) is not None:
        tf.members.clear()
        yield info


def samples(
    tf: tarfile.TarFile, *, read: frozenset[str] = frozenset(), skip: int = 0, hasher=None, item_limit: int = ITEM_LIMIT
) -> Iterator[Sample]:
    """The samples of an open tar, in order, with the bytes of their members whose extension is in `read`
    from sample `skip` on (the others, and members over their bound, as headers). `hasher` (hashlib) is fed
    every member's name, size, mtime."""
    key: str | None = None
    members: dict[str, bytes | tarfile.TarInfo] = {}
    problem: tuple[str, str] | None = None
    number = count = 0
    for info in _headers(tf):
        if hasher is not None:
            hasher.update(f"{info.name}\0{info.size}\0{info.mtime}\0{info.type!r}\n".encode("utf-8", "surrogateescape"))
        if not info.isfile():
            continue
        k, ext = split_key(info.name)
        if k != key:
            if key is not None:
                yield Sample(key, number, members, problem)
                number += 1
            key, members, problem, count = k, {}, None, 0
        count += 1
        if problem is not None:
            continue
        if count > MEMBERS_PER_SAMPLE:
            members, problem = {}, ("too_many_members", f"sample {k} has more than {MEMBERS_PER_SAMPLE} members")
            continue
        if ext in members:
            problem = ("duplicate_member", f"sample {k} holds two .{ext} members ({info.name} again)")
            continue
        limit = TEXT_MEMBER_LIMIT if ext in TEXT_EXTS else item_limit
        wanted = number >= skip and ext in read and info.size <= limit
        members[ext] = tf.extractfile(info).read() if wanted else info
    if key is not None:
        yield Sample(key, number, members, problem)
