"""`tagstream verify`'s checksum pass over everything besides the shards' data.mdb: the index arrays, tags.tsv
and rejects.jsonl against the manifest (format version 2), each vocabulary against its checksums.json and each
mask against its NAME.json (loader/data/checksums.py). What an older tagstream did not record is a note, not a fault."""

from __future__ import annotations

from pathlib import Path

from tagstream.loader.data import checksums
from tagstream.loader.data import format as fmt


def checksum_problems(root: Path, manifest: dict) -> tuple[list[tuple[str | None, str]], list[str]]:
    """((shard name or None, problem), ...) and notes; never raises on damage."""
    problems: list[tuple[str | None, str]] = []
    notes: list[str] = []
    if manifest.get("version") == 1:
        notes.append(
            "manifest format version 1 records no checksums of the index arrays or tags.tsv: only the shards were "
            "checked against checksums (a conversion by this tagstream records them)"
        )
    for s in manifest["shards"]:
        for array, digest in s.get("index", {}).items():
            path = fmt.index_path(root, s["name"], array)
            problem = path.exists() and checksums.mismatch(
                path, {"sha256": digest}, f"index file {path.name}", "the manifest's"
            )
            if problem:
                problems.append((s["name"], problem))
    for name, entry in manifest.get("files", {}).items():
        if problem := checksums.mismatch(root / name, entry, name, "the manifest's"):
            problems.append((None, problem))
    d = root / fmt.VOCAB_DIR
    for folder in sorted(p for p in d.iterdir() if (p / "vocab.json").exists()) if d.is_dir() else []:
        try:
            sums = checksums.read_sums(folder / checksums.VOCAB_SUMS)
        except fmt.FormatError as exc:
            problems.append((None, f"vocabulary {folder.name}: {exc}"))
            continue
        if sums is None:
            notes.append(
                f"vocabulary {folder.name} has no {checksums.VOCAB_SUMS} (built by an older tagstream): "
                "its files are checked for structure only"
            )
        for file, entry in (sums or {}).items():
            if problem := checksums.mismatch(folder / file, entry, f"vocabulary {folder.name}: {file}"):
                problems.append((None, problem))
    d = root / fmt.MASKS_DIR
    for path in sorted(d.glob("*.npy")) if d.is_dir() else []:
        try:
            entry = checksums.read_sums(checksums.mask_sums_path(path))
        except fmt.FormatError as exc:
            problems.append((None, f"mask {path.stem}: {exc}"))
            continue
        if entry is None:
            notes.append(f"mask {path.stem} has no {path.stem}.json (written by an older tagstream): not covered")
        elif problem := checksums.mismatch(path, entry, f"mask {path.name}"):
            problems.append((None, problem))
    return problems, notes
