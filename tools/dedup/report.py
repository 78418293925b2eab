"""The contamination report of one evaluation set: how many of its images have a near copy in the training
data, per method (hash, embedding, same bytes, any) and per class of the evaluation set's vocabulary.

An image counts once however many training copies it has; a class's count covers the images carrying
that class (an image with two classes counts in both), so the per-class rows need not add up to the total.
"""

from __future__ import annotations

import numpy as np

from tagstream.loader.data import Dataset
from tagstream.tools.dedup.pairs import Pairs


def _flags(pairs: Pairs, method: str, exact: bool) -> dict[str, np.ndarray]:
    flags = {"any": np.ones(len(pairs), np.bool_)}
    if method in ("hash", "both"):
        flags["hash"] = pairs.by_hash
    if method in ("embed", "both"):
        flags["embed"] = pairs.by_embed
    if exact:
        flags["exact"] = pairs.exact
    return flags


def contamination(pairs: Pairs, eval_ds: Dataset, *, method: str, exact: bool, vocab: str | None = None) -> dict:
    """{"images", "contaminated": {method: images}, "fraction": {method: share}, "vocab", "per_class"}.

    vocab: the evaluation set's vocabulary for the per-class rows; None takes its only (or first) one,
    and with none there are no per-class rows (vocab null)."""
    from tagstream.loader.data import Vocab

    n = eval_ds.num_images
    hit = {m: np.bincount(pairs.eval[f], minlength=n) > 0 for m, f in _flags(pairs, method, exact).items()}
    out = {
        "images": n,
        "contaminated": {m: int(h.sum()) for m, h in hit.items()},
        "fraction": {m: float(h.mean()) if n else 0.0 for m, h in hit.items()},
        "vocab": None,
        "per_class": {},
    }
    names = eval_ds.vocab_names()
    if vocab is None and not names:
        return out
    v = Vocab(eval_ds, vocab if vocab is not None else names[0])  # names the known ones if `vocab` is missing
    offsets = np.asarray(v.label_offsets, np.int64)
    labels = np.asarray(v.labels, np.int64)
    image_of = np.repeat(np.arange(n), np.diff(offsets))
    per_class_images = np.bincount(labels, minlength=v.num_classes)
    rows = {m: np.bincount(labels[h[image_of]], minlength=v.num_classes) for m, h in hit.items()}
    out["vocab"] = v.name
    out["per_class"] = {
        name: {"images": int(per_class_images[c]), **{m: int(r[c]) for m, r in rows.items()}}
        for c, name in enumerate(v.class_names())
    }
    return out


def format_summary(s: dict) -> str:
    """The dedup summary (run_dedup's dict) as the lines `tagstream dedup` prints."""
    hash_rule, embed_rule = f"pHash distance <= {s['max_distance']}", f"cosine >= {s['threshold']}"
    rule = {"hash": hash_rule, "embed": embed_rule, "both": f"{hash_rule} or {embed_rule}"}[s["method"]]
    lines = [
        f"{s['train']}: {s['excluded']:,} of {s['train_images']:,} images excluded "
        f"({100 * s['excluded_fraction']:.3f}%), {rule}"
        f"{', same bytes checked' if s['exact_bytes_checked'] else ''}{', mirrors too' if s['mirrors'] else ''}"
    ]
    if s.get("exact_check"):
        lines.append(
            f"  same bytes: {s['exact_check']}, {s['exact_candidates']:,} matching training images read to compare"
        )
    if s.get("exact_wrong_digests"):
        lines.append(
            f"  {s['exact_wrong_digests']:,} images read have a stored digest their bytes do not give (a damaged or "
            "edited index; copies behind such a digest are missed): run `tagstream verify` on TRAIN and EVAL"
        )
    if s.get("train_bordered") is None:
        lines.append(
            "  TRAIN has no content boxes (converted before they were stored): its whole frames were hashed, so "
            "copies with added borders can be missed; convert it again to hash inside the borders"
        )
    else:
        lines.append(f"  TRAIN: {s['train_bordered']:,} images with uniform borders, hashed inside them")
    for e in s["against"]:
        how = "; ".join(x for x in (e.get("hash_join"), e.get("index")) if x)
        if "content_boxes" in e:
            how += f"; content boxes {e['content_boxes']}, {e['bordered']:,} with borders"
        lines.append(
            f"  vs {e['label']} ({e['images']:,} images): {e['pairs']:,} pairs ({e['hash_pairs']:,} by hash, "
            f"{e['embed_pairs']:,} by embedding, {e['exact_pairs']:,} same bytes, {e['mirrored_pairs']:,} mirrored), "
            f"{e['train_matched']:,} train / {e['eval_matched']:,} eval images matched; {how}"
        )
        c = e["contamination"]
        lines.append(
            "    eval images with a near copy in train: "
            + ", ".join(f"{m} {k:,} ({100 * c['fraction'][m]:.2f}%)" for m, k in c["contaminated"].items())
        )
        worst = sorted(
            ((row["any"] / row["images"], name, row) for name, row in c["per_class"].items() if row["images"]),
            key=lambda t: (-t[0], t[1]),
        )[:5]
        for share, cls, row in worst:
            if row["any"]:
                lines.append(f"      class {cls}: {row['any']} of {row['images']} ({100 * share:.1f}%)")
    lines.append(f"mask {s['mask']}\npairs {s['pairs_file']}")
    if "grid" in s:
        lines.append(f"grid {s['grid']['path']} ({s['grid']['pairs_shown']} pairs, {s['grid']['order']} first)")
    lines.append(f"{s['seconds']:.2f} s")
    return "\n".join(lines)
