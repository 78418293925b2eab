"""`tagstream bench loader --peers`: our loader, the peers that are installed and the full-decode ceilings, each
in its own process, in interleaved rounds (a noisy moment on a shared machine hits every contender, and the
order turns each round), on the same JPEG bytes with the same crop, flip, batch and workers; the medians, each
contender's ratio to ours, ours against each ceiling and the best peer, and our pixels against torchvision's."""

from __future__ import annotations

import importlib
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from tagstream.tools.bench.peers.contenders import LOADERS, PEERS, PeerRun
from tagstream.tools.bench.peers.formats import prepare_formats
from tagstream.tools.bench.peers.measure import CEILINGS, measure


def parse_peers(text: str) -> tuple[str, ...]:
    """'all' or a comma-separated list of peer names -> the names, in the table's order."""
    if text.strip() == "all":
        return PEERS
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(PEERS))
    if unknown or not names:
        raise ValueError(f"--peers {text!r}: unknown {unknown or 'empty'}; choose from {', '.join(PEERS)} or all")
    return tuple(n for n in PEERS if n in names)


def missing_module(name: str) -> str | None:
    """Why a contender cannot run here (its package does not import), or None."""
    module = LOADERS[name][2] if name in LOADERS else None
    if module is None:
        return None
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"not installed ({exc}); pip install 'tagstream[peers]'"
    return None


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def bench_peers(
    dataset: str | Path,
    *,
    make: int | None,
    peers: tuple[str, ...],
    batch_size: int,
    workers: int,
    image_size: int,
    rounds: int,
    cache: str | Path | None,
    pixel_crops: int = 400,
    progress: Callable[[str, int], Callable[[int], None]],
    echo: Callable[[str], None],
) -> dict:
    """Every contender `rounds` times, interleaved; the result as a dict (format_peers prints it)."""
    from tagstream.tools.bench.loader import prepare_dataset
    from tagstream.tools.bench.loader_pixels import pixel_gap

    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1")
    ds = prepare_dataset(dataset, make=make, workers=workers, progress=progress)
    cache = Path(cache) if cache else Path(ds.root).with_name(Path(ds.root).name + "-peers")
    skipped = {name: why for name in peers if (why := missing_module(name))}
    for name, why in skipped.items():
        echo(f"{name}: skipped, {why}")
    runnable = [name for name in peers if name not in skipped]
    formats = prepare_formats(ds, cache, tuple({LOADERS[n][3] for n in runnable} | {"files"}), echo=echo)
    for name in list(runnable):
        if LOADERS[name][3] not in formats:
            skipped[name] = f"its format ({LOADERS[name][3]}) could not be written"
            runnable.remove(name)
    run = PeerRun(
        dataset=str(ds.root),
        cache=str(cache),
        images=len(ds),
        batch_size=batch_size,
        workers=workers,
        image_size=image_size,
    )
    order = ["ours", *runnable, *CEILINGS]
    result: dict = {
        "settings": asdict(run),
        "cores": len(os.sched_getaffinity(0)),
        "load_before": _load(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "skipped": skipped,
        "contenders": {n: {"label": (LOADERS[n] if n in LOADERS else CEILINGS[n])[0], "rounds": []} for n in order},
    }
    tick = progress("contender runs", rounds * len(order))
    for r in range(rounds):
        turn = order[r % len(order) :] + order[: r % len(order)]  # who runs first moves each round
        for name in turn:
            result["contenders"][name]["rounds"].append(measure(name, run))
            tick(1)
    result["load_after"] = _load()
    summarize(result)
    result["pixels"] = pixel_gap(ds, crops=pixel_crops, size=image_size)
    return result


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def summarize(result: dict) -> None:
    """Medians per contender (a failed round leaves the contender failed), ratios of medians, ours per round."""
    contenders = result["contenders"]
    for c in contenders.values():
        failed = [r["failed"] for r in c["rounds"] if "failed" in r or "skipped" in r]
        if failed or not c["rounds"]:
            c["failed"] = failed[0] if failed else "no round ran"
            continue
        for key in ("images_per_s", "cpu_ms_per_image"):
            c[key] = _median([r[key] for r in c["rounds"]])
        c["peak_pss_bytes"] = max(r["peak_pss_bytes"] for r in c["rounds"])
        c["best_images_per_s"] = max(r["images_per_s"] for r in c["rounds"])  # the round the load hurt least
    ours = contenders["ours"].get("images_per_s")
    if not ours:
        return
    for name, c in contenders.items():
        if "images_per_s" in c:
            c["vs_ours"] = c["images_per_s"] / ours
    ratios = {}
    for name in CEILINGS:
        if "images_per_s" in contenders[name]:
            ratios[f"ours_vs_{name}"] = ours / contenders[name]["images_per_s"]
    peers = {n: c["images_per_s"] for n, c in contenders.items() if n in PEERS and "images_per_s" in c}
    if peers:
        best = max(peers, key=peers.__getitem__)
        ratios["best_peer"] = best
        ratios["ours_vs_best_peer"] = ours / peers[best]
        ratios["ours_vs_best_peer_per_round"] = [
            o["images_per_s"] / contenders[best]["rounds"][i]["images_per_s"]
            for i, o in enumerate(contenders["ours"]["rounds"])
        ]
    if "images_per_s" in contenders["full-turbo"]:
        ratios["ours_vs_full-turbo_per_round"] = [
            o["images_per_s"] / t["images_per_s"]
            for o, t in zip(contenders["ours"]["rounds"], contenders["full-turbo"]["rounds"])
        ]
    best = {n: c["best_images_per_s"] for n, c in contenders.items() if "best_images_per_s" in c}
    if "full-turbo" in best:
        ratios["best_rounds_ours_vs_full-turbo"] = best["ours"] / best["full-turbo"]
    if peers:
        ratios["best_rounds_ours_vs_best_peer"] = best["ours"] / max(best[n] for n in peers)
    result["ratios"] = ratios
