"""Class distribution as stored vs as the sampler will deliver it (expected draws per epoch), as a table and a log-log plot.

Exact expectations from the sampler's own weights (RankSampler.expected_class_draws), not a
simulation: no randomness, one O(nnz) pass. An image carrying k classes counts once for each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tagstream.loader.data import Dataset, Vocab
from tagstream.loader.sampling import RankSampler, eligibility
from tagstream.tools.inspection.report import save_figure


@dataclass(frozen=True)
class SamplingReport:
    vocab: str
    sampling: str
    combine: str
    world: int
    names: list[str]  # by class id (descending stored count)
    stored: NDArray[np.int64]  # eligible images carrying each class
    expected: NDArray[np.float64]  # expected draws per epoch of an image carrying each class
    samples_per_epoch: int
    drawable: int  # images with nonzero weight
    imbalance: float  # rank weight packing: max rank weight / mean - 1


def effective_classes(freq: NDArray[np.float64]) -> float:
    """exp(entropy) of a class distribution: how many equally frequent classes it is worth."""
    p = np.asarray(freq, dtype=np.float64)
    p = p[p > 0] / p.sum() if p.sum() > 0 else p[:0]
    return float(np.exp(-(p * np.log(p)).sum())) if p.size else 0.0


def sampling_report(
    root: str | Path,
    vocab: str,
    *,
    sampling: str = "sqrt",
    combine: str = "sum",
    masks: tuple[str, ...] = (),
    world: int = 1,
    samples_per_epoch: int | None = None,
) -> SamplingReport:
    """Stored class counts and expected draws per epoch, summed over `world` ranks (packing error included)."""
    ds = Dataset(root)
    v = Vocab(ds, vocab)
    ok = eligibility(ds, masks=masks) if masks else None
    sampler = RankSampler(
        ds, v, sampling=sampling, combine=combine, eligible=ok, world=world, samples_per_epoch=samples_per_epoch
    )
    return SamplingReport(
        vocab=vocab,
        sampling=sampling,
        combine=combine,
        world=world,
        names=v.class_names(),
        stored=sampler.counts,
        expected=sampler.expected_class_draws(),
        samples_per_epoch=sampler.samples_per_epoch,
        drawable=sampler.num_drawable,
        imbalance=float(sampler.imbalance),
    )


def sampling_section(r: SamplingReport) -> dict:
    """The report as a JSON-serialisable dict (every class, by id)."""
    return {
        "vocab": r.vocab,
        "sampling": r.sampling,
        "combine": r.combine,
        "world": r.world,
        "samples_per_epoch": r.samples_per_epoch,
        "drawable_images": r.drawable,
        "rank_imbalance": r.imbalance,
        "effective_classes": {"stored": effective_classes(r.stored), "sampled": effective_classes(r.expected)},
        "classes": [
            {"id": c, "name": n, "stored": int(r.stored[c]), "expected_draws": float(r.expected[c])}
            for c, n in enumerate(r.names)
        ],
    }


def format_sampling_report(r: SamplingReport, *, rows: int = 10) -> str:
    """Summary lines, then the head and tail classes (by stored count) with stored vs expected shares."""
    order = np.lexsort((np.arange(len(r.names)), -r.stored))
    present = order[r.stored[order] > 0]
    stored_total = max(int(r.stored.sum()), 1)
    expected_total = max(float(r.expected.sum()), 1e-300)
    lines = [
        f"vocab {r.vocab}: {len(r.names)} classes; sampling {r.sampling} (combine {r.combine}); "
        f"{r.samples_per_epoch} draws per epoch from {r.drawable} drawable images"
        + (f", {r.world} ranks" if r.world > 1 else "")
    ]
    if present.size:
        hi, lo = present[0], present[-1]
        lines.append(
            f"most/least frequent class: stored {r.stored[hi] / r.stored[lo]:.3g}x, "
            f"sampled {r.expected[hi] / max(r.expected[lo], 1e-300):.3g}x  ({r.names[hi]} vs {r.names[lo]})"
        )
        lines.append(
            f"effective number of classes: stored {effective_classes(r.stored):.1f}, sampled {effective_classes(r.expected):.1f}"
        )
    if r.world > 1:
        lines.append(f"rank packing imbalance: {r.imbalance:.4f} (max rank weight / mean - 1)")
    lines.append(f"{'class':<24} {'stored':>10} {'stored %':>9} {'expected':>12} {'sampled %':>9} {'ratio':>7}")
    shown = present if present.size <= 2 * rows else np.concatenate([present[:rows], present[-rows:]])
    for n, c in enumerate(shown):
        if present.size > 2 * rows and n == rows:
            lines.append(f"... {present.size - 2 * rows} classes ...")
        s, e = int(r.stored[c]), float(r.expected[c])
        lines.append(
            f"{r.names[c][:24]:<24} {s:>10d} {100 * s / stored_total:>8.3f}% {e:>12.2f} "
            f"{100 * e / expected_total:>8.3f}% {e / s:>7.3f}"
        )
    empty = len(r.names) - present.size
    if empty:
        lines.append(f"{empty} classes have no eligible image (never drawn)")
    return "\n".join(lines)  # tags are user data: the CLI boundary neutralises terminal controls


def plot_sampling(r: SamplingReport, path: str | Path) -> Path:
    """Both distributions against class rank (by stored count) on one log-log chart, saved as an image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.lexsort((np.arange(len(r.names)), -r.stored))
    order = order[r.stored[order] > 0]
    rank = np.arange(1, order.size + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.loglog(rank, r.stored[order], label="stored: images per class", color="tab:blue")
    ax.loglog(
        rank,
        np.maximum(r.expected[order], 1e-12),
        label=f"sampled ({r.sampling}): expected draws per epoch",
        color="tab:orange",
    )
    ax.set_xlabel("class rank (by stored count)")
    ax.set_ylabel("images")
    ax.set_title(f"vocab {r.vocab}: {len(order)} classes, {r.samples_per_epoch} draws per epoch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
