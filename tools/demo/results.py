"""The demo's results as Markdown: the table of backbones, the rule behind the rare/frequent split, low-shot rows and
the stage timings."""

from __future__ import annotations

import math

ROWS = (("random", "random init"), ("natural", "hashtags, natural sampling"), ("sqrt", "hashtags, sqrt sampling"))


def low_shot_table(res: dict) -> list[str]:
    """Markdown rows: k-shot linear-probe top-1 per backbone, mean ± std over the seeds."""
    shots = list(next(iter(res["low_shot"].values())))
    lines = ["| backbone | " + " | ".join(f"{k}-shot top-1 %" for k in shots) + " |", "|---|" + "---|" * len(shots)]
    for key, label in ROWS:
        r = res["low_shot"][key]
        lines.append(f"| {label} | " + " | ".join(pct(r[k]["top1_mean"], r[k]["top1_std"]) for k in shots) + " |")
    seeds = res["low_shot"][ROWS[0][0]][shots[0]]["seeds"]
    return lines + [
        "",
        f"Low-shot: a linear probe on k labelled images per class, {seeds} draws of them; ± is the standard "
        "deviation over the draws (not a standard error).",
    ]


def pct(x, se=None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{100 * x:.1f}" + (f" ± {100 * se:.1f}" if se is not None and math.isfinite(se) else "")


def format_results(res: dict) -> str:
    """The results as Markdown: the table and the rule behind it, the zero-shot and MAE rows, the stage timings."""
    lines = [
        *_main_table(res),
        "",
        *zero_shot_lines(res),
        "",
        *mae_lines(res),
        "",
        "Stage times (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in res["stage_seconds"].items())
        + f"; total {res['total_seconds']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def zero_shot_lines(res: dict) -> list[str]:
    """Zero-shot through the hashtag head: the sqrt model and the random-init floor."""
    z = res["zero_shot"]
    m = z["mapping"]
    lines = [
        "| zero-shot (no downstream training) | top-1 % | top-5 % | top-1 on mapped classes % | top-1 without prior correction % |",
        "|---|---|---|---|---|",
    ]
    for key, label in (("random", "random init (floor)"), ("pretrained", "hashtags, sqrt sampling")):
        r = z["results"][key]
        lines.append(
            f"| {label} | {pct(r['top1'])} | {pct(r['top5'])} | {pct(r['top1_mapped_classes'])} | {pct(r['top1_uncorrected'])} |"
        )
    return lines + [
        "",
        f"Each downstream class read from the hashtag head through the hashtags it maps to ({', '.join(z['how'])}): "
        f"{m['mapped']} of {m['classes']} classes mapped"
        + (
            f", unmapped (never predicted, their images count as misses): {', '.join(m['unmapped'])}"
            if m["unmapped"]
            else ""
        )
        + "; prior correction: the head's mean prediction over the evaluation images (labels unused), alpha 1.",
    ]


def mae_lines(res: dict) -> list[str]:
    """MAE -> hashtags against hashtags alone on the tiny ViT: linear probe and low-shot, per seed and mean."""
    from tagstream.tools.demo.successors import VIT_ROWS

    m = res["mae"]
    shots = list(m["rows"][VIT_ROWS[0][0]]["low_shot_mean"])
    lines = [
        "| tiny ViT backbone | linear top-1 % per seed | mean | " + " | ".join(f"{k}-shot mean" for k in shots) + " |",
        "|---|---|---|" + "---|" * len(shots),
    ]
    for key, label in VIT_ROWS:
        r = m["rows"][key]
        seeds = " / ".join(pct(x["top1"]) for x in r["per_seed"])
        lines.append(
            f"| {label} | {seeds} | {pct(r['top1_mean'])} | "
            + " | ".join(pct(r["low_shot_mean"][k]) for k in shots)
            + " |"
        )
    rate = {k: [p["steady_images_per_s"] for p in v] for k, v in m["pretrain"].items()}
    return lines + [
        "",
        f"vit_tiny_8 (2 layers of width 32, patch 8) at {res['settings']['image_size']} px, seeds {m['seeds']}: MAE "
        f"{m['mae_steps']} steps (75 % of patches masked, every image alike), then {m['steps']} hashtag steps from its "
        f"encoder; hashtags alone: the same {m['steps']} steps from random init. Low-shot: mean over seeds of the mean over "
        f"{res['low_shot'][ROWS[0][0]][shots[0]]['seeds']} draws. Training rate (steady images/s, mean over seeds): MAE "
        f"{_mean(rate['mae']):.0f}, hashtags {_mean(rate['vit_hashtags']):.0f}.",
    ]


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else math.nan


def _main_table(res: dict) -> list[str]:
    s = res["settings"]
    lines = [
        f"### tagstream demo ({res['size']}: {s['images']} hashtag images, {s['downstream_classes']} downstream classes, "
        f"{s['steps']} pretraining steps of {s['batch_size']} at {s['image_size']} px, seed {res['seed']}, "
        f"vocabulary filter {res['vocab_filter']}: {res['vocab_classes']} classes)",
        "",
        "| backbone | top-1 % | top-5 % | top-1 rare classes % | top-1 frequent classes % | hashtag P@1 (held out) % |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["table"]:
        lines.append(
            f"| {r['backbone']} | {pct(r['top1'], r['top1_se'])} | {pct(r['top5'])} | "
            f"{pct(r['top1_rare'], r['top1_rare_se'])} | {pct(r['top1_frequent'], r['top1_frequent_se'])} | "
            f"{pct(r['hashtag_p1'])} |"
        )
    share = res["sampled_share"]
    lines += [
        "",
        f"Linear probe on frozen features, downstream eval split ({s['downstream_eval']} images per class); ± is one "
        "binomial standard error. Rare / frequent: " + res["group_rule"] + ".",
        f"Rare: {', '.join(res['groups']['rare'])}. Frequent: {', '.join(res['groups']['frequent'])}.",
        f"Share of pretraining draws carrying a rare downstream class: natural {pct(share['natural']['rare'])} %, "
        f"sqrt {pct(share['sqrt']['rare'])} %; a frequent one: natural {pct(share['natural']['frequent'])} %, "
        f"sqrt {pct(share['sqrt']['frequent'])} %. Share of all class draws that go to a visual-concept class "
        f"(the rest: junk or unmerged tags): natural {pct(res['concept_label_share']['natural'])} %, "
        f"sqrt {pct(res['concept_label_share']['sqrt'])} %.",
        "",
        *low_shot_table(res),
    ]
    return lines
