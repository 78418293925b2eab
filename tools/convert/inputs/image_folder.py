"""An ImageFolder tree as a conversion input: SRC/<tag>/<image>, the folder name the image's one tag, the relative
path its source id. Positions are the sorted relative paths of every file under SRC (hidden names skipped); a
symbolic link to a folder or to a file outside SRC is listed and rejected, never followed.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tagstream.loader.data import storage
from tagstream.tools.convert.inputs.base import RAW_LIMIT, InputKind, Item, KindOptions, rejected, utf8_ok
from tagstream.tools.convert.inputs.paths import stamp


@dataclass(frozen=True)
class ImageFolderOptions(KindOptions):
    """None: the folder names are the tags."""


class ImageFolderInput(InputKind):
    name = "imagefolder"
    title = "ImageFolder trees"
    options_type = ImageFolderOptions
    takes = "folder"
    remote = False
    fallback = True  # a local folder holding no other kind's files

    def __init__(self, path, options):
        if not isinstance(path, Path):
            raise ValueError(f"an ImageFolder must be a local directory, got {storage.redact(str(path))}")
        super().__init__(path, options)
        self._files: list[str] | None = None

    def _listing(self) -> list[str]:
        """Sorted relative paths of the files under SRC, and of the symbolic links to folders (os.walk does
        not descend into them; they are listed so that each becomes a rejected input, not a silent gap)."""
        if self._files is None:
            files = []
            for dirpath, dirnames, filenames in os.walk(self.path):
                rel = os.path.relpath(dirpath, self.path)
                linked = [d for d in dirnames if not d.startswith(".") and os.path.islink(os.path.join(dirpath, d))]
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in linked)
                for name in sorted(filenames + linked):
                    if not name.startswith("."):
                        files.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
            self._files = sorted(files)
        return self._files

    def _link_problem(self, rel: str) -> str | None:
        """Why a symbolic link under an ImageFolder is not followed, or None for anything else: a link to a
        folder (not descended: loops, and a second name for the same images), or to a file outside SRC."""
        path = self.path / rel
        if not path.is_symlink():
            return None
        target = os.path.realpath(path)
        if os.path.isdir(target):
            return f"symbolic link to a folder ({target}): not followed; give the folder itself as SRC or copy it in"
        if not Path(target).is_relative_to(os.path.realpath(self.path)):
            return f"symbolic link to a file outside SRC ({target}): not followed"
        return None

    def scan(self) -> tuple[int, str]:
        h = hashlib.sha256()
        files = self._listing()
        for rel in files:
            h.update(os.fsencode(rel) + b"\0" + stamp(str(self.path / rel)) + b"\n")
        return len(files), h.hexdigest()

    def items(self, start: int = 0) -> Iterator[Item]:
        yield from itertools.islice(self._all_items(), start, None)

    def _all_items(self) -> Iterator[Item]:
        for pos, rel in enumerate(self._listing()):
            link = self._link_problem(rel)
            if link is not None:
                text = rel.encode("utf-8", "replace").decode()[:RAW_LIMIT]
                yield Item(pos, pos + 1, text, None, (), "", link, "symlink")
            elif not utf8_ok(rel):
                yield rejected(pos, pos + 1, rel.encode("utf-8", "replace").decode(), "path is not valid UTF-8")
            elif "/" not in rel:
                yield rejected(pos, pos + 1, rel, "file is not inside a class folder (SRC/<class>/<image>)")
            else:
                yield Item(pos, pos + 1, rel, str(self.path / rel), (rel.split("/", 1)[0],), rel)
