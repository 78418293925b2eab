"""A conversion's input: SRC resolved, its kind chosen (registry.py) with that kind's options, and the fingerprint
scheme stamped on its scan — what the engine, the parts and the merge talk to."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

from tagstream.loader.data import storage
from tagstream.tools.convert.inputs.base import Item, KindOptions
from tagstream.tools.convert.inputs.bounds import ITEM_LIMIT
from tagstream.tools.convert.inputs.paths import is_pattern
from tagstream.tools.convert.inputs.registry import INPUT_KINDS, detect_format, kind_options

# The fingerprint's scheme, written before its digest: "2:" covers each image's size and modification time (an
# image changed between a crash and the rerun is caught); a bare digest was written by tagstream before that.
FINGERPRINT_SCHEME = "2:"


class Source:
    """An input collection: `scan()` counts and fingerprints it, `items(start)` enumerates it from input `start`.

    Options are the kind's options object (`options=CsvOptions(...)`), or keyword options as `tagstream convert`
    passes them (image_column=..., tags_field=..., images=...: registry.OPTION_NAMES; other kinds' are left out)."""

    def __init__(
        self,
        path: str | Path,
        fmt: str = "auto",
        options: KindOptions | None = None,
        *,
        item_limit: int = ITEM_LIMIT,
        **keywords,
    ):
        if options is not None and fmt == "auto":  # an options object names its kind
            fmt = next((k.name for k in INPUT_KINDS.values() if type(options) is k.options_type), fmt)
        self.format = detect_format(path, fmt)
        kind = INPUT_KINDS[self.format]
        if options is None:
            options = kind_options(kind, **keywords)
        elif keywords:
            raise ValueError("give a source its options object or keyword options, not both")
        elif type(options) is not kind.options_type:
            raise ValueError(f"--format {self.format} takes {kind.options_type.__name__}, got {type(options).__name__}")
        spec = str(path)
        local = storage.local_path(spec)
        # a local, plain path resolved (a rerun from another directory is the same source); URLs and patterns as given
        self.path: Path | str = local.resolve() if local is not None and not is_pattern(spec) else spec
        if local is not None and is_pattern(spec):
            self.path = os.path.abspath(local)
        self.options = options
        self.reader = kind(self.path, options)
        self.reader.item_limit = item_limit  # --max-file-bytes: a bigger image is rejected from its header, unread
        self.seen_raw: list[str] = []  # the raw text of the first inputs a conversion read (engine.fields_seen)

    FIELD_SAMPLES = 200  # inputs whose fields are looked at when the tags are not where the user said

    def fields_seen(self) -> tuple[str, ...]:
        """The fields (table columns, JSON keys) of the first inputs a conversion read (seen_raw), for a message."""
        header = getattr(self.reader, "header", None)
        if header:
            return tuple(header)
        names: dict[str, None] = {}
        for raw in self.seen_raw:
            try:
                obj = json.loads(raw) if raw.startswith("{") else None
            except ValueError:
                continue
            if isinstance(obj, dict):
                names.update(dict.fromkeys(map(str, obj)))
        return tuple(names)

    def tag_option(self) -> str:
        """The options that say where this kind's tags are, as flags (for a message about missing tags)."""
        names = [f.name for f in fields(self.options) if f.name.startswith(("tags_", "caption_"))]
        if not names:  # JSON lines: fixed fields
            return "a 'tags' list or a 'caption' with #hashtags on each line"
        return " / ".join("--" + n.replace("_", "-") for n in names)

    def describe(self) -> dict:
        return {"format": self.format, "path": str(self.path), **self.reader.describe()}

    def scan(self) -> tuple[int, str]:
        """(number of items, fingerprint of the input: FINGERPRINT_SCHEME + a sha256) — one pass, no image is decoded."""
        count, digest = self.reader.scan()
        return count, FINGERPRINT_SCHEME + digest

    def scan_state(self, store: Path | None = None) -> dict | None:
        """What scan() learned that items(start) needs (tars: samples per tar; tables: rows per row group; JSON
        lines and CSV: marks, byte offsets), as JSON, for a process that converts a range of an input scanned
        elsewhere (a part on another machine): `load_scan_state` there skips the scan. `store`, a folder every
        part can read (OUT/.convert/), holds what is too big for JSON (YFCC's join index). None for kinds that
        need none."""
        return self.reader.scan_state(store)

    def load_scan_state(self, state: dict | None, store: Path | None = None) -> None:
        if state is not None:
            self.reader.load_scan_state(state, store)

    def items(self, start: int = 0) -> Iterator[Item]:
        """Items from input position `start` on (positions as counted by scan(), which must run first for
        tars, tables and YFCC: their readers locate `start` from the per-file counts the scan found)."""
        yield from self.reader.items(start)
