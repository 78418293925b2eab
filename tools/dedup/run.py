"""De-duplicate a training dataset against evaluation datasets: mask every training image that is a near
copy of an evaluation image, by perceptual hash (distance <= D), by embedding (cosine >= t, faiss kNN
join) or both, and every exact copy (same stored bytes: tools/dedup/exact.py, from the digests stored at
conversion, reading only the matching images). Hashes are of each image's content box (inside
uniform borders, tools.dedup.borders): a training set converted before the boxes were stored is joined
by its whole-frame hashes as they are (the summary says so: reconvert it to find padded copies); an
evaluation set without them has its boxes found and hashes made by decoding it once.

Writes, under TRAIN/masks/: NAME.npy (bool (N,), True = excluded; no data is deleted), NAME.pairs.tsv
(one line per matched pair, whichever methods found it) and NAME.summary.json (with the contamination
report: per evaluation set, per method and per class, how many of its images have a near copy in TRAIN).
The mask holds exactly the training images of the reported pairs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tagstream.kernels import dedup as kdedup
from tagstream.loader.data import Dataset, mask_outputs, stage_mask, write_mask
from tagstream.loader.data import format as fmt
from tagstream.tools.dedup.exact import exact_pairs
from tagstream.tools.dedup.features import EmbedMethod, embed_dataset, open_features
from tagstream.tools.dedup.hashing import DEFAULT_MAX_DISTANCE, bordered, eval_hashes
from tagstream.tools.dedup.knn import cosine_join
from tagstream.tools.dedup.pairs import mask_paths, merge, write_pairs
from tagstream.tools.dedup.report import contamination

METHODS = ("hash", "embed", "both")


def eval_labels(against: Sequence[Path]) -> list[str]:
    """Short names for the evaluation datasets in the pairs file: directory names, made unique with #k."""
    labels: list[str] = []
    for p in against:
        base = Path(p).resolve().name
        label, k = base, 1
        while label in labels:
            k += 1
            label = f"{base}#{k}"
        labels.append(label)
    return labels


def _check(name: str, method: str, max_distance: int, against: Sequence, embedding: EmbedMethod | None) -> None:
    fmt.check_name(name, "mask")  # one rule for every name inside a dataset (fullmatch: no trailing newline)
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {METHODS}")
    if not isinstance(max_distance, int) or not 0 <= max_distance <= kdedup.MAX_DISTANCE:
        raise ValueError(f"max_distance={max_distance!r} is not allowed; allowed: integers 0..{kdedup.MAX_DISTANCE}")
    if not against:
        raise ValueError("no evaluation dataset given: pass at least one --against EVAL")
    if method != "hash" and embedding is None:
        raise ValueError(f"method {method!r} needs feature files or a checkpoint")
    if method != "hash" and embedding.features and len(embedding.against_features) != len(against):
        raise ValueError(
            f"{len(against)} evaluation set(s) but {len(embedding.against_features)} --against-features "
            "file(s): give one per --against, in the same order"
        )


def _features(method: str, embedding: EmbedMethod | None, train_ds: Dataset, eval_ds: list[Dataset], workdir):
    """(train Features, [eval Features]) for the embedding method (None, [] for the hash method)."""
    if method == "hash":
        return None, []
    if embedding.embed is not None:
        train_files = (embed_dataset(train_ds.root, embedding.embed, workdir),)
        eval_files = [(embed_dataset(ds.root, embedding.embed, workdir),) for ds in eval_ds]
    else:
        train_files, eval_files = embedding.features, [(f,) for f in embedding.against_features]
    return open_features(train_files, train_ds), [open_features(f, ds) for f, ds in zip(eval_files, eval_ds)]


def run_dedup(
    train: str | Path,
    against: Sequence[str | Path],
    *,
    name: str,
    method: str = "hash",
    max_distance: int = DEFAULT_MAX_DISTANCE,
    exact: bool = True,
    mirrors: bool = False,
    embedding: EmbedMethod | None = None,
    eval_vocab: str | None = None,
    grid: str | Path | None = None,
    grid_pairs: int = 16,
    grid_order: str = "closest",
    seed: int = 0,
    workdir: str | Path | None = None,
) -> dict:
    """Join TRAIN against each of `against` by `method` ("hash", "embed" or "both": the union), add the
    same-bytes pairs (exact=True), write masks/NAME.{npy,pairs.tsv,summary.json} (and a grid of pairs to
    `grid`); returns the summary. With a checkpoint, the embeddings are written under `workdir`."""
    _check(name, method, max_distance, against, embedding)
    t0 = time.perf_counter()
    train_ds = Dataset(train)
    eval_ds = [Dataset(p) for p in against]
    if any(ds.root.resolve() == train_ds.root.resolve() for ds in eval_ds):
        raise ValueError(f"{train} is also given as --against: every image would match itself")
    for ds in eval_ds:
        if ds.num_images == 0:
            raise ValueError(f"evaluation set {ds.root} has no images: there is nothing to de-duplicate against")
    labels = eval_labels([Path(p) for p in against])
    train_feats, eval_feats = _features(method, embedding, train_ds, eval_ds, workdir)
    train_hash = np.ascontiguousarray(train_ds.global_array("phash"))
    check = exact_pairs(train_ds, eval_ds) if exact else None
    exacts = check.pairs if check else [(np.zeros(0, np.int64), np.zeros(0, np.int64))] * len(eval_ds)
    results, eval_boxes, per_eval = [], [], []
    mask = np.zeros(train_ds.num_images, np.bool_)
    for e, (ds, label, ex) in enumerate(zip(eval_ds, labels, exacts)):
        h, hm, boxes, boxes_from = eval_hashes(ds, mirrors=mirrors and method != "embed")
        hash_found, embed_found, similarity_of, entry = [], None, None, {}
        if method in ("hash", "both"):
            *direct, entry["hash_join"] = kdedup.join(train_hash, h, max_distance)
            hash_found.append(direct)
            if hm is not None:
                hash_found.append(kdedup.join(train_hash, hm, max_distance)[:3])
        if method in ("embed", "both"):
            ev = eval_feats[e].dense()
            embed_found, plan = cosine_join(train_feats, ev, embedding.threshold, kind=embedding.index)
            entry["index"] = plan.describe()
            similarity_of = _similarity(train_feats, ev)
        pairs = merge(
            n_eval=ds.num_images,
            train_hash=train_hash,
            eval_hash=h,
            mirror_hash=hm,
            hash_found=hash_found,
            embed_found=embed_found,
            exact=ex,
            similarity_of=similarity_of,
        )
        results.append(pairs)
        eval_boxes.append(boxes)
        mask[pairs.train] = True
        per_eval.append(
            {
                "path": str(ds.root),
                "label": label,
                "images": ds.num_images,
                "content_boxes": boxes_from,
                "bordered": _bordered_boxes(ds, boxes),
                **entry,
                "pairs": len(pairs),
                "hash_pairs": int(pairs.by_hash.sum()),
                "embed_pairs": int(pairs.by_embed.sum()),
                "exact_pairs": int(pairs.exact.sum()),
                "mirrored_pairs": int((pairs.mirrored & pairs.by_hash).sum()),
                "train_matched": int(np.unique(pairs.train).size),
                "eval_matched": int(np.unique(pairs.eval).size),
                "contamination": contamination(pairs, ds, method=method, exact=exact, vocab=eval_vocab),
            }
        )
    mask_path, pairs_path, summary_path = mask_paths(train_ds.root, name)
    summary = {
        "name": name,
        "train": str(train_ds.root),
        "train_images": train_ds.num_images,
        "train_bordered": bordered(train_ds),  # None: no content boxes stored, whole frames hashed
        "method": method,
        "max_distance": max_distance if method != "embed" else None,
        "threshold": embedding.threshold if method != "hash" else None,
        "exact_bytes_checked": exact,
        "exact_check": check and check.how,  # "stored digests" | "read every image" | a mix | None (not checked)
        "exact_candidates": check and check.candidates,  # training images read to confirm a digest match
        "exact_wrong_digests": check and check.wrong_digests,  # images read whose stored digest is not theirs
        "mirrors": mirrors and method != "embed",
        "excluded": int(mask.sum()),
        "excluded_fraction": float(mask.mean()) if mask.size else 0.0,
        "against": per_eval,
        "mask": str(mask_path),
        "pairs_file": str(pairs_path),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if grid is not None:
        from tagstream.tools.dedup.grid import draw_grid

        summary["grid"] = draw_grid(
            Path(grid), train_ds, eval_ds, labels, results, count=grid_pairs, order=grid_order, seed=seed
        )
    outputs = (
        pairs_path.name,
        summary_path.name,
        *mask_outputs(name),
    )  # renamed in order: the mask, read by runs, last
    with stage_mask(
        train_ds.root, name, outputs=outputs
    ) as tmp:  # one builder of NAME at a time (loader/data/staging.py)
        write_pairs(tmp / pairs_path.name, results, labels, train_boxes=train_ds.content_boxes, eval_boxes=eval_boxes)
        write_mask(train_ds.root, name, mask, into=tmp)
        fmt.write_json_atomic(tmp / summary_path.name, summary)
    return summary


def _bordered_boxes(ds: Dataset, boxes: np.ndarray) -> int:
    whole = (boxes[:, 0] == 0) & (boxes[:, 1] == 0)
    whole &= (boxes[:, 2] == ds.global_array("width")) & (boxes[:, 3] == ds.global_array("height"))
    return int((~whole).sum())


SIMILARITY_BYTES = 1 << 24  # feature rows gathered per side per round: 16 MiB, not (pairs, D) floats at once


def _similarity(train_feats, eval_vectors):
    def similarity_of(ti, ei):
        out = np.empty(ti.shape[0], np.float32)
        step = max(1, SIMILARITY_BYTES // (4 * eval_vectors.shape[1]))
        for s in range(0, ti.shape[0], step):
            part = slice(s, s + step)
            out[part] = np.einsum("ij,ij->i", train_feats.take(ti[part]), eval_vectors[ei[part]])
        return out

    return similarity_of
