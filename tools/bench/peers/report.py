"""The table and the plot of `tagstream bench loader --peers`."""

from __future__ import annotations

from pathlib import Path

from tagstream.tools.bench.peers.measure import CEILINGS


def _mb(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def format_peers(r: dict) -> str:
    s = r["settings"]
    rounds = max(len(c["rounds"]) for c in r["contenders"].values())
    r_label = f"median of {rounds} interleaved rounds"
    lines = [
        f"{s['images']} images ({s['dataset']}), RandomResizedCrop {s['image_size']} (scale 0.08-1) + flip, uint8, "
        f"batch {s['batch_size']}, {s['workers']} workers each, {r['cores']} cores; load average before "
        f"{r['load_before']}, after {r['load_after']}; {r['started']}",
        f"{'contender (' + r_label + ')':<50}{'images/s':>9}  {'per round':<22}{'vs ours':>8}{'CPU ms/img':>11}{'peak PSS':>10}",
    ]
    for name, c in r["contenders"].items():
        if "failed" in c:
            lines.append(f"{c['label']:<50}{'—':>9}  {c['failed']}")
            continue
        per = ", ".join(f"{x['images_per_s']:.0f}" for x in c["rounds"])
        lines.append(
            f"{c['label']:<50}{c['images_per_s']:>9.0f}  {per:<22}{c.get('vs_ours', 0):>7.2f}x"
            f"{c['cpu_ms_per_image']:>11.2f}{_mb(c['peak_pss_bytes']):>10}"
        )
    for name, why in r.get("skipped", {}).items():
        lines.append(f"{name:<50}{'—':>9}  skipped: {why}")
    q = r.get("ratios", {})
    if "ours_vs_full-turbo" in q:
        per = ", ".join(f"{v:.2f}x" for v in q.get("ours_vs_full-turbo_per_round", []))
        lines.append(f"ours / libjpeg-turbo full decode = {q['ours_vs_full-turbo']:.2f}x (goal >= 1.2; rounds {per})")
    others = [f"{n[len('full-') :]} {q[f'ours_vs_{n}']:.2f}x" for n in CEILINGS if f"ours_vs_{n}" in q]
    if others:
        lines.append("ours / each full decode: " + ", ".join(others))
    if "best_peer" in q:
        per = ", ".join(f"{v:.2f}x" for v in q["ours_vs_best_peer_per_round"])
        lines.append(f"ours / best peer ({q['best_peer']}) = {q['ours_vs_best_peer']:.2f}x (goal >= 1.5; rounds {per})")
    if "best_rounds_ours_vs_full-turbo" in q:
        lines.append(
            f"best rounds (the least disturbed by other load): ours / libjpeg-turbo full decode "
            f"{q['best_rounds_ours_vs_full-turbo']:.2f}x"
            + (
                f", ours / best peer {q['best_rounds_ours_vs_best_peer']:.2f}x"
                if "best_rounds_ours_vs_best_peer" in q
                else ""
            )
        )
    p = r.get("pixels")
    if p:
        lines.append(
            f"our pixels vs torchvision RandomResizedCrop on PIL over {p['crops']} crops of these images: exact "
            f"max {p['exact']['max']}, mean {p['exact']['mean']:.3f}; with DCT scaling (default) max "
            f"{p['dct']['max']}, mean {p['dct']['mean']:.3f} ({p['dct']['scaled']} crops at a reduced scale)"
        )
    return "\n".join(lines)


def plot_peers(r: dict, path: str | Path) -> Path:
    """Bars of median images/s (ours first, the peers, then the full-decode ceilings hatched), each round a dot,
    the libjpeg-turbo ceiling a dashed line, ratios to ours on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(n, c) for n, c in r["contenders"].items() if "images_per_s" in c][::-1]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.6))
    for y, (name, c) in enumerate(rows):
        ceiling = name in CEILINGS
        color = "#d62728" if name == "ours" else ("#bbbbbb" if ceiling else "#1f77b4")
        ax.barh(y, c["images_per_s"], color=color, hatch="//" if ceiling else None, edgecolor="white")
        ax.plot([x["images_per_s"] for x in c["rounds"]], [y] * len(c["rounds"]), "k.", ms=4)
        ax.text(c["images_per_s"], y, f"  {c['images_per_s']:.0f}/s  ({c.get('vs_ours', 0):.2f}x)", va="center")
    if "images_per_s" in r["contenders"].get("full-turbo", {}):
        ax.axvline(r["contenders"]["full-turbo"]["images_per_s"], color="gray", ls="--", lw=1)
    ax.set_yticks(range(len(rows)), [c["label"] for _, c in rows], fontsize=8)
    s = r["settings"]
    ax.set_xlabel("images/s (median of interleaved rounds; dots: each round)")
    ax.set_title(
        f"RandomResizedCrop {s['image_size']} + flip, batch {s['batch_size']}, {s['workers']} workers, "
        f"{r['cores']} cores, load {r['load_before'][0]}",
        fontsize=9,
    )
    ax.set_xlim(0, max(x["images_per_s"] for _, c in rows for x in c["rounds"]) * 1.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
