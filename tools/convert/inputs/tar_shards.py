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

import hashlib
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tagstream.loader.data import storage
from tagstream.tools.convert.inputs import img2dataset
from tagstream.tools.convert.inputs.base import RAW_LIMIT, InputKind, Item, KindOptions, utf8_ok
from tagstream.tools.convert.inputs.bounds import JSON_DEPTH, json_too_deep
from tagstream.tools.convert.inputs.paths import display_name, expand, file_size
from tagstream.tools.convert.inputs.tag_text import caption_hashtags, split_tag_cell
from tagstream.tools.convert.inputs.tar_reading import (
    DAMAGE,
    IMAGE_EXTS,
    READ_EXTS,
    TAR_SUFFIXES,
    TEXT_EXTS,
    Sample,
    end_problem,
    open_tar,
    samples,
)


@dataclass
class TarScan:
    """What the scan learned about one tar and its img2dataset sidecars."""

    path: str
    size: int | None  # None: no such file
    samples: int
    damage: str | None  # why the tar (or its rest after `samples` samples) cannot be read
    failed: int = 0  # samples its NNNNN.parquet sidecar lists as failed (never in the tar): one reject each
    notes: list[str] = field(default_factory=list)  # what the sidecars say is wrong with the tar: one reject each

    @property
    def readable(self) -> int:
        """Inputs of the tar itself: its samples, and the reject naming its damage."""
        return self.samples + (1 if self.damage is not None else 0)

    @property
    def inputs(self) -> int:
        return self.readable + self.failed + len(self.notes)


def scan_tar(path: str, hasher, status_field: str = "status") -> TarScan:
    """Count one tar's samples (and find damage) and its sidecars' failures, feeding its member list to `hasher`."""
    size = file_size(path)
    hasher.update(f"{path}\0{size}\n".encode("utf-8", "surrogateescape"))
    count, damage = 0, None
    if size is None:
        damage = "no such file"
    else:
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
    failed, notes = scan_sidecars(path, count, damage, hasher, status_field)
    return TarScan(path, size, count, damage, failed, notes)


def scan_sidecars(path: str, count: int, damage: str | None, hasher, status_field: str) -> tuple[int, list[str]]:
    """(failed samples, notes) from a tar's img2dataset sidecars, when it has them: a sidecar that cannot be
    read, and a tar holding fewer samples than its stats' successes, are notes (one reject each)."""
    table, stats = img2dataset.sidecars(path)
    sizes = file_size(table), file_size(stats)
    hasher.update(f"sidecars\0{sizes}\n".encode())
    failed, notes = 0, []
    if sizes[0] is not None and status_field:
        try:
            failed = sum(1 for _ in img2dataset.failed_rows(table, status_field))
        except (storage.StorageError, FileNotFoundError, PermissionError):
            raise
        except Exception as exc:  # pyarrow raises its own types on a damaged file
            notes.append(f"img2dataset sidecar {storage.redact(table)} cannot be read: {type(exc).__name__}: {exc}")
    if sizes[1] is not None:
        successes, problem = img2dataset.stats_successes(stats)
        if problem is not None:
            notes.append(problem)
        elif successes is not None and count < successes and damage is None:
            notes.append(
                f"{storage.redact(path)} holds {count} samples, but img2dataset's {stats.rsplit('/', 1)[-1]} "
                f"counts {successes} successful downloads: {successes - count} are missing from the tar"
            )
    hasher.update(f"{failed}\0{notes}\n".encode())
    return failed, notes


SCAN_THREADS = 8  # tars scanned at once


def _in_order(files: list[str], threads: int, status_field: str) -> Iterator[tuple[TarScan, bytes]]:
    """(scan, digest of its member list) of each tar in file order, scanned `threads` at a time; at most
    2 x threads results wait for an earlier tar."""
    from concurrent.futures import ThreadPoolExecutor

    def one(path: str) -> tuple[TarScan, bytes]:
        h = hashlib.sha256()
        return scan_tar(path, h, status_field), h.digest()

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
        the reads overlap); each tar's member list is hashed on its own and the digests fed in file order, so
        the fingerprint equals a one-at-a-time scan's."""
        files = expand(self.spec, TAR_SUFFIXES)
        h = hashlib.sha256()
        self.tars = []
        for scanned, digest in _in_order(files, threads, self.options.status_field):
            h.update(digest)
            self.tars.append(scanned)
        return sum(t.inputs for t in self.tars), h.hexdigest()

    def scan_state(self, store=None) -> dict:  # store: unused (the state is small)
        if self.tars is None:
            raise RuntimeError("scan() the source before asking for its scan state")
        return {"tars": [[t.path, t.size, t.samples, t.damage, t.failed, t.notes] for t in self.tars]}

    def load_scan_state(self, state: dict, store=None) -> None:
        self.tars = [TarScan(*row) for row in state["tars"]]

    def items(self, start: int = 0) -> Iterator[Item]:
        if self.tars is None:
            self.scan()
        names = [t.path for t in self.tars]
        base = 0
        for tar in self.tars:
            if start < base + tar.inputs:
                name = display_name(tar.path, names)
                skip = max(0, start - base)
                yield from self._tar_items(tar, base, skip, name)
                yield from self._sidecar_items(tar, base, skip, name)
            base += tar.inputs

    def _tar_items(self, tar: TarScan, base: int, skip: int, name: str) -> Iterator[Item]:
        produced = skip
        error = tar.damage
        if produced < tar.samples:
            try:
                # a local plain tar is walked by its headers: the workers read each image member themselves
                with open_tar(tar.path, stream=storage.local_path(tar.path) is None) as tf:
                    by_reference = str(storage.local_path(tar.path)) if tf.seekable else None
                    read = TEXT_EXTS if by_reference else READ_EXTS
                    for sample in samples(tf, read=read, skip=skip, item_limit=self.item_limit):
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
        for k in range(produced, tar.readable):  # the unreadable rest, as many inputs as the scan counted
            what = f"{name}: sample {k + 1}" if k < tar.samples else name
            reason = "missing_file" if tar.size is None else "damaged_file"
            yield Item(base + k, k + 1, what, what, (), "", error or "the tar ended early", reason)

    def _sidecar_items(self, tar: TarScan, base: int, skip: int, name: str) -> Iterator[Item]:
        """The tar's failed samples as its img2dataset sidecar lists them, then the sidecars' notes."""
        first = tar.readable
        if skip < first + tar.failed:
            table = img2dataset.sidecars(tar.path)[0]
            shown = img2dataset.sidecars(name)[0]
            k = first
            try:
                for row, values in img2dataset.failed_rows(table, self.options.status_field):
                    if k >= first + tar.failed:
                        break
                    if k >= skip:
                        raw = img2dataset.raw_row(values)
                        yield img2dataset.failed(
                            base + k, row, raw, f"{shown}:{row}", values, self.options.status_field
                        )
                    k += 1
            except (storage.StorageError, FileNotFoundError, PermissionError):
                raise
            except Exception as exc:  # changed since the scan: the rest as the scan counted it
                error = f"img2dataset sidecar {shown} cannot be read: {type(exc).__name__}: {exc}"
            else:
                error = f"img2dataset sidecar {shown} lists fewer failed samples than when it was scanned"
            for k in range(max(k, skip), first + tar.failed):
                yield Item(base + k, k + 1, shown, shown, (), "", error, "sidecar_mismatch")
        for j, note in enumerate(tar.notes):
            k = first + tar.failed + j
            if k >= skip:
                yield Item(base + k, k + 1, name, name, (), "", note, "sidecar_mismatch")

    def _item(self, pos: int, name: str, s: Sample, tar: str | None) -> Item:
        o = self.options
        where = f"{name}:{s.key}"
        line = s.number + 1
        meta: dict = {}
        raw = where
        if s.problem is not None:
            return Item(pos, line, raw, where, (), "", s.problem[1], s.problem[0])
        if "json" in s.members:
            data = s.members["json"]
            if isinstance(data, tarfile.TarInfo):
                return Item(pos, line, raw, where, (), "", f"JSON member of {data.size} bytes is too large")
            if json_too_deep(data):
                return Item(pos, line, raw, where, (), "", f"{s.key}.json nests deeper than {JSON_DEPTH} levels")
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
            return img2dataset.failed(pos, line, raw, where, meta, o.status_field)
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
        if isinstance(image, tarfile.TarInfo) and tar is not None and image.size <= self.item_limit:
            member, image = (tar, image.offset_data, image.size), None
        elif isinstance(image, tarfile.TarInfo):
            return Item(
                pos,
                line,
                raw,
                f"{where}.{ext}",
                (),
                "",
                f"image member of {image.size} bytes (over --max-file-bytes {self.item_limit}): not read",
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
