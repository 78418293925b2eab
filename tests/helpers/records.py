"""What a converted dataset holds, record by record, whatever its shard boundaries: to compare conversions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tagstream.loader.data import format as fmt
from tagstream.loader.data.manifest import read_manifest


def dataset_records(root: Path) -> list[tuple]:
    """Every image in global order: (image bytes, tag texts in stored order, source id, width, height, phash,
    tag texts from the index). Raw tag ids are turned into texts through tags.tsv, so two conversions whose
    tag tables agree give equal lists; the raw ids are compared by `tag_table` equality."""
    manifest = read_manifest(root)
    table = tag_table(root)
    rows = []
    for shard in manifest["shards"]:
        name = shard["name"]
        index = {a: np.load(fmt.index_path(root, name, a)) for a in fmt.INDEX_ARRAYS}
        env = fmt.open_env(fmt.shard_path(root, name))
        with env.begin() as txn:
            for i, (key, value) in enumerate(txn.cursor()):
                assert fmt.decode_key(key) == i
                rec = fmt.unpack_record(value)
                ids = index["tag_ids"][index["tag_offsets"][i] : index["tag_offsets"][i + 1]]
                rows.append(
                    (
                        rec["image"],
                        [table[t] for t in rec["tags"]],
                        rec["source"],
                        int(index["width"][i]),
                        int(index["height"][i]),
                        int(index["phash"][i]),
                        [table[t] for t in ids],
                    )
                )
        env.close()
    return rows


def tag_table(root: Path) -> list[str]:
    lines = (Path(root) / fmt.TAGS).read_text().splitlines()[1:]
    return [line.split("\t")[1] for line in lines]


def same_dataset_parts(root: Path) -> dict:
    """The files that must be byte-identical between conversions of the same inputs, and the manifest's totals."""
    manifest = json.loads((Path(root) / fmt.MANIFEST).read_text())
    totals = {
        k: manifest[k] for k in ("images", "tags", "inputs", "rejected", "rejects_by_reason", "reencoded", "source")
    }
    return {
        "tags.tsv": (Path(root) / fmt.TAGS).read_bytes(),
        "rejects": (Path(root) / fmt.REJECTS).read_bytes(),
        **totals,
    }


def partition_source(root: Path) -> Path:
    """A JSON-lines source of 18 inputs for partitioned conversions: 13 images whose tags first appear in an
    order that differs from part to part (so parts number them differently), a run of 3 missing files
    (inputs 3..5: a whole part of N=6 rejected), a bad line inside and a missing file at the end."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    lines = []
    for i in range(13):
        Image.new("RGB", (40, 36), (15 * i, 100, 200 - 10 * i)).save(root / "images" / f"{i}.jpg", quality=95)
        tags = [f"#T{(7 * i) % 5}", f"u{i // 4}", "all"] + ([f"only{i}"] if i % 4 == 3 else [])
        lines.append(json.dumps({"image": f"images/{i}.jpg", "tags": tags, "id": f"s{i}"}))
    lines[3:3] = [json.dumps({"image": f"images/gone{k}.jpg", "tags": [f"lost{k}"]}) for k in range(3)]
    lines.insert(10, "{not json")
    lines.append(json.dumps({"image": "images/gone-last.jpg", "tags": ["late"]}))
    (root / "h.jsonl").write_text("\n".join(lines) + "\n")
    return root / "h.jsonl"
