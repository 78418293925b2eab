"""Conversion's shards: the format's ShardWriter (loader/data/writer.py) plus a per-shard state file, the commit point.

Commit protocol (crash-safe against kill -9 at any instant): records go to shards/NNNNN.lmdb.tmp in one
write transaction; on commit the index arrays are written atomically, the directory is renamed to its
final name, and last the shard's state file .convert/NNNNN.json records it as done. A rerun trusts only
shards that have a state file and discards everything else.

Determinism: keys are appended in order in a single transaction into a fresh environment with a fixed
map size and zero-initialised pages, so the same records give a byte-identical data.mdb (on machines with
the same page size); the manifest's sha256 is that of data.mdb.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

from tagstream.loader.data import TMP_SUFFIX, ShardWriter
from tagstream.loader.data import format as fmt
from tagstream.tools.convert.image import Accepted

STATE_DIR = ".convert"


def state_path(root: Path, shard: int) -> Path:
    return Path(root) / STATE_DIR / f"{fmt.shard_name(shard)}.json"


class ConvertShard(ShardWriter):
    """A shard being converted: the format's ShardWriter plus what a resumed conversion needs (the input
    range, rejects, new tags, re-encode counts), recorded in .convert/NNNNN.json as the commit point."""

    def __init__(self, root: Path, shard: int, input_start: int):
        super().__init__(root, shard)
        self.input_start = input_start
        self.rejects: list[dict] = []
        self.new_tags: list[str] = []
        self.reencoded: Counter[str] = Counter()

    def add_image(self, image: Accepted, tag_ids: list[int], source: str) -> None:
        self.add(
            image.data,
            tag_ids,
            source,
            width=image.width,
            height=image.height,
            phash=image.phash,
            content_box=image.content_box,
        )
        self.reencoded.update(image.reencoded)
        if image.reencoded:
            self.reencoded["images"] += 1

    def commit_part(self, input_stop: int) -> dict:
        """Make the shard durable; returns its state without the rejects (`slim`), all of it written to
        .convert/NNNNN.json, the commit point."""
        entry = self.commit()
        state = {
            **entry,
            "input_start": self.input_start,
            "input_stop": input_stop,
            "new_tags": self.new_tags,
            "rejected": len(self.rejects),
            "rejects": self.rejects,
            "reencoded": dict(sorted(self.reencoded.items())),
        }
        fmt.write_json_atomic(state_path(self.root, self.shard), state)
        return slim(state)


def slim(state: dict) -> dict:
    """A shard's state as kept in memory: without its rejects (read back from its state file when written out),
    so a conversion's memory grows with its shards, not with its rejects."""
    return {k: v for k, v in state.items() if k != "rejects"}


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63


def state_problem(state: object, *, on_disk: bool = False) -> str:
    """What is wrong with a committed shard's state (a `.convert/NNNNN.json`, `on_disk`, or an entry of a part's
    part.json), or "": every key the engine and merge read, by type and range, so damage from outside is found where
    it is read."""
    if not isinstance(state, dict):
        return f"a shard state is a JSON object, not {type(state).__name__}"
    try:
        fmt.check_name(state.get("name"), "shard")
    except (ValueError, TypeError) as exc:
        return str(exc)
    bad = [k for k in ("bytes", "images", "input_start", "input_stop", "rejected") if not _count(state.get(k))]
    if bad:
        return f"shard {state['name']}: {', '.join(bad)} must be whole numbers >= 0"
    if state["input_start"] > state["input_stop"]:
        return f"shard {state['name']}: input_start {state['input_start']} is after input_stop {state['input_stop']}"
    digest = state.get("sha256")
    if not isinstance(digest, str) or not re.fullmatch(r"([0-9a-f]{64})?", digest):
        return f"shard {state['name']}: sha256 must be 64 hex digits"
    tags, reencoded = state.get("new_tags"), state.get("reencoded")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return f"shard {state['name']}: new_tags must be a list of tags"
    if not isinstance(reencoded, dict) or not all(_count(v) for v in reencoded.values()):
        return f"shard {state['name']}: reencoded must map kinds to counts"
    index = state.get("index", {})  # the index arrays' sha256s, where recorded
    if not isinstance(index, dict) or not all(
        (k in fmt.INDEX_ARRAYS or k in fmt.OPTIONAL_INDEX_ARRAYS)
        and isinstance(v, str)
        and re.fullmatch(r"[0-9a-f]{64}", v)
        for k, v in index.items()
    ):
        return f"shard {state['name']}: index must map index array names to 64 hex digits"
    if (on_disk or "rejects" in state) and not isinstance(state.get("rejects"), list):
        return f"shard {state['name']}: rejects must be a list"  # on disk it always holds them
    return ""


def shard_intact(root: Path, state: dict) -> bool:
    """Cheap resume check of a committed shard: its data file has the recorded size and its index exists."""
    data = fmt.shard_path(root, state["name"]) / "data.mdb"
    if not data.exists() or data.stat().st_size != state["bytes"]:
        return False
    return all(fmt.index_path(root, state["name"], a).exists() for a in fmt.INDEX_ARRAYS)


def remove_after(root: Path, keep: int) -> None:
    """Delete every shard, index file, state file and temporary file beyond the first `keep` shards."""
    root = Path(root)

    def stale(stem: str) -> bool:
        head = stem.split(".", 1)[0]
        return TMP_SUFFIX in stem or not head.isdigit() or int(head) >= keep

    for path in sorted((root / fmt.SHARDS_DIR).iterdir()):
        if stale(path.name) and path.is_dir():
            shutil.rmtree(path)
        elif stale(path.name):
            path.unlink()
    for folder in (root / fmt.INDEX_DIR, root / STATE_DIR):
        for path in sorted(folder.iterdir()):
            if path.name != "state.json" and path.name != "lock" and stale(path.name):
                path.unlink()
    for path in root.glob("*.tmp*"):
        path.unlink()
