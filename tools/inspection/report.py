"""`tagstream inspect`: what a dataset holds, as a dict of named sections (one function per section).

Streams the per-shard index (exact size percentiles come from summed per-shard histograms), so memory
does not grow with the number of images. More sections (a vocabulary's sampled class distribution,
masks) plug in by adding a function to SECTIONS.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tagstream.loader.data import Dataset

PERCENTILES = (0, 5, 50, 95, 100)


def _dataset_section(ds: Dataset, *, top: int) -> dict:
    m = ds.manifest
    return {
        "path": str(ds.root),
        "format_version": m["version"],
        "images": ds.num_images,
        "shards": len(ds.shards),
        "bytes": int(sum(s["bytes"] for s in ds.shards)),
        "source": m.get("source", {}),
        "vocabularies": ds.vocab_names(),
        "masks": ds.mask_names(),
    }


def _hist_percentiles(hist: np.ndarray) -> dict[str, int]:
    total = int(hist.sum())
    if total == 0:
        return {}
    cdf = np.cumsum(hist)
    return {f"p{p}": int(np.searchsorted(cdf, max(1, int(np.ceil(p / 100 * total))))) for p in PERCENTILES}


def _sizes_section(ds: Dataset, *, top: int) -> dict:
    hists: dict[str, np.ndarray] = {"width": np.zeros(1, np.int64), "height": np.zeros(1, np.int64)}
    total_pixels = 0
    for k in range(len(ds.shards)):
        w = np.asarray(ds.index_array(k, "width"), np.int64)
        h = np.asarray(ds.index_array(k, "height"), np.int64)
        total_pixels += int((w * h).sum())
        for name, a in (("width", w), ("height", h)):
            if a.size:
                b = np.bincount(a)
                if len(b) > len(hists[name]):
                    b[: len(hists[name])] += hists[name]
                    hists[name] = b
                else:
                    hists[name][: len(b)] += b
    out = {name: _hist_percentiles(hist) for name, hist in hists.items()}
    out["mean_megapixels"] = round(total_pixels / ds.num_images / 1e6, 4) if ds.num_images else 0.0
    return out


def tag_counts(ds: Dataset) -> np.ndarray:
    """Images per raw tag, by tag id (from tags.tsv)."""
    return np.array([c for _, _, c in ds.tags], dtype=np.int64)


def _tags_section(ds: Dataset, *, top: int) -> dict:
    tags = ds.tags
    counts = tag_counts(ds)
    untagged = 0
    hist = np.zeros(1, np.int64)
    for k in range(len(ds.shards)):
        per_image = np.diff(np.asarray(ds.index_array(k, "tag_offsets"), np.int64))
        untagged += int((per_image == 0).sum())
        b = np.bincount(per_image, minlength=len(hist))
        b[: len(hist)] += hist
        hist = b
    order = np.argsort(-counts, kind="stable")[:top]
    n = ds.num_images
    return {
        "tags": len(tags),
        "tags_used_once": int((counts == 1).sum()),
        "untagged_images": untagged,
        "tags_per_image": {
            "mean": round(float((np.arange(len(hist)) * hist).sum() / n), 3) if n else 0.0,
            "max": int(len(hist) - 1) if n else 0,
        },
        "top": [{"tag": tags[i][1], "count": int(counts[i])} for i in order],
    }


def _rejects_section(ds: Dataset, *, top: int) -> dict:
    m = ds.manifest
    return {
        "inputs": m.get("inputs"),
        "rejected": m.get("rejected", 0),
        "by_reason": m.get("rejects_by_reason", {}),
        "reencoded": m.get("reencoded", {}),
    }


def _borders_section(ds: Dataset, *, top: int) -> dict:
    """Images with uniform borders (letterbox, pillarbox, a flat frame): their content boxes, which the
    pHash was taken inside (index/NNNNN.content_box.npy); a dataset converted before them has none."""
    from tagstream.loader.data import format as fmt

    if not all(ds.has_index_array(k, "content_box") for k in range(len(ds.shards))):
        return {"content_boxes": "none stored (converted before them: pHashes are of whole frames)"}
    bordered, examples = 0, []
    for k in range(len(ds.shards)):
        box = fmt.unpack_boxes(ds.index_array(k, "content_box"))
        w, h = np.asarray(ds.index_array(k, "width")), np.asarray(ds.index_array(k, "height"))
        hit = np.flatnonzero((box[:, 0] > 0) | (box[:, 1] > 0) | (box[:, 2] < w) | (box[:, 3] < h))
        for i in hit[: max(0, min(top, 5) - len(examples))].tolist():
            examples.append(
                {"image": int(ds.shard_starts[k]) + i, "size": f"{w[i]}x{h[i]}", "content_box": box[i].tolist()}
            )
        bordered += int(hit.size)
    return {"content_boxes": "stored", "bordered_images": bordered, "examples": examples}


def _masks_section(ds: Dataset, *, top: int) -> dict:
    """Each mask (masks/NAME.npy, e.g. from `tagstream dedup`) and how many images it excludes."""
    return {
        "masks": [
            {"name": n, "excluded": int(np.count_nonzero(ds.load_mask(n))), "of": ds.num_images}
            for n in ds.mask_names()
        ]
    }


SECTIONS: dict[str, Callable[..., dict]] = {
    "dataset": _dataset_section,
    "image_sizes": _sizes_section,
    "tags": _tags_section,
    "rejects": _rejects_section,
    "borders": _borders_section,
    "masks": _masks_section,
}


def inspect_dataset(root: str | Path, *, top: int = 20) -> dict:
    """Every section of SECTIONS for the dataset at root (JSON-serialisable)."""
    if top < 0:
        raise ValueError(f"top must be >= 0, got {top!r}")
    ds = Dataset(root)
    return {name: section(ds, top=top) for name, section in SECTIONS.items()}


def format_report(report: dict) -> str:
    """A readable rendering of inspect_dataset's dict (generic: nested dicts indent, lists of rows tabulate)."""
    lines: list[str] = []

    def emit(key: str, value, indent: int) -> None:
        pad = "  " * indent
        if isinstance(value, dict):
            lines.append(f"{pad}{key}")
            for k, v in value.items():
                emit(k, v, indent + 1)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{pad}{key}")
            for row in value:
                lines.append(pad + "  " + "  ".join(f"{v!s:<16}" for v in row.values()).rstrip())
        else:
            shown = (", ".join(map(str, value)) or "none") if isinstance(value, list) else value
            lines.append(f"{pad}{key:<20} {shown}")

    for name, section in report.items():
        emit(name, section, 0)
    return "\n".join(lines)  # tags are user data: the CLI boundary neutralises terminal controls


def plot_tag_frequency(root: str | Path, path: str | Path) -> Path:
    """Rank vs count of the raw tags, log-log (a Zipf law is a straight line), written to path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = Dataset(root)
    counts = np.sort(tag_counts(ds))[::-1]
    counts = counts[counts > 0]
    fig, ax = plt.subplots(figsize=(6, 4))
    if counts.size:
        ax.loglog(np.arange(1, counts.size + 1), counts, marker=".", linestyle="-")
    ax.set_xlabel("tag rank")
    ax.set_ylabel("images with the tag")
    ax.set_title(f"{ds.root.name}: {counts.size} tags, {ds.num_images} images")
    ax.grid(True, which="both", alpha=0.3)
    return save_figure(fig, path)


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=False)


def save_figure(fig, path: str | Path, *, dpi: int = 100) -> Path:
    """Lay out, write (making its folder, as embed and transfer make their --out folders) and close a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
