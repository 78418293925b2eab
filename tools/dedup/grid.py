"""A PNG of matched pairs side by side (training image | evaluation image, with the hash distance and the
cosine), the closest pairs first or a seeded random sample, so a person can check by eye that the
de-duplication matches are true copies (a random sample shows the borderline ones too)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tagstream.loader.data import Dataset, ShardStore
from tagstream.loader.data import format as fmt


def _image(store: ShardStore, index: int) -> np.ndarray:
    with fmt.open_image(store.read_image(index)) as img:  # an image-bomb header: refused before decoding
        return np.asarray(img.convert("RGB"))


ORDERS = ("closest", "random")


def _choose(distance: np.ndarray, similarity: np.ndarray, count: int, order: str, seed: int) -> list[int]:
    """Positions in the pairs' concatenated columns. closest: highest cosine first where pairs have one, then
    smallest hash distance (ties in pair order); random: a seeded sample, in pair order."""
    n = distance.shape[0]
    if order == "random":
        rng = np.random.default_rng(seed)
        return sorted(rng.choice(n, size=min(count, n), replace=False).tolist()) if n else []
    cosine = np.where(np.isnan(similarity), -2.0, similarity.astype(np.float64))  # NaN (no features) sorts last
    return np.lexsort((distance, -cosine))[:count].tolist()  # stable: ties keep pair order


def draw_grid(
    path: Path,
    train: Dataset,
    evals: Sequence[Dataset],
    labels: Sequence[str],
    results: Sequence,
    *,
    count: int = 16,
    order: str = "closest",
    seed: int = 0,
) -> dict:
    """Draw up to `count` matched pairs, the closest first or chosen uniformly at random (seeded); returns
    {"path", "pairs_shown", "order"}. With no pairs the PNG says so, so the file always exists."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if count < 1:
        raise ValueError(f"grid pair count {count!r} is not allowed; allowed: >= 1")
    if order not in ORDERS:
        raise ValueError(f"grid order {order!r} is not one of {ORDERS}")
    distance = np.concatenate([np.zeros(0, np.int64), *(p.distance for p in results)])
    similarity = np.concatenate([np.zeros(0, np.float32), *(p.similarity for p in results)])
    chosen = _choose(distance, similarity, count, order, seed)
    starts = np.cumsum([0] + [len(p) for p in results])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not chosen:
        fig, ax = plt.subplots(figsize=(4, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no matched pairs", ha="center", va="center")
    else:
        train_store = ShardStore(train)
        eval_stores = [ShardStore(ds) for ds in evals]
        fig, axes = plt.subplots(len(chosen), 2, figsize=(5, 2.2 * len(chosen)), squeeze=False)
        for row, k in enumerate(chosen):
            e = int(np.searchsorted(starts, k, side="right")) - 1
            p, r = results[e], k - int(starts[e])
            i, j, d, sim, exact, mirrored = (
                int(p.train[r]),
                int(p.eval[r]),
                int(p.distance[r]),
                float(p.similarity[r]),
                p.exact[r],
                p.mirrored[r],
            )
            note = ("" if math.isnan(sim) else f" cos={sim:.3f}") + (
                " (same bytes)" if exact else " (mirrored)" if mirrored else ""
            )
            for col, (img, title) in enumerate(
                ((_image(train_store, i), f"train {i}"), (_image(eval_stores[e], j), f"{labels[e]} {j}  d={d}{note}"))
            ):
                axes[row, col].imshow(img)
                axes[row, col].set_title(title, fontsize=8)
                axes[row, col].axis("off")
        train_store.close()
        for s in eval_stores:
            s.close()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return {"path": str(path), "pairs_shown": len(chosen), "order": order}
