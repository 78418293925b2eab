"""A transfer report as strict JSON (non-finite floats as null) and as a fixed-width text table."""

from __future__ import annotations

import math

from tagstream.train.lowshot import format_low_shot


def strict_json(obj):
    """A copy with every non-finite float (NaN, inf) as None, so the JSON is strict."""
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def format_table(report: dict) -> str:
    """The results as a fixed-width text table, one row per backbone."""
    single = report["task"] == "single"
    cols = ("top1", "top5", "mean_class_accuracy") if single else ("mAP",)
    head = f"{'backbone':<12}" + "".join(f"{c:>22}" for c in cols) + f"{'images':>9}{'seconds':>9}"
    lines = [
        f"{report['mode']} transfer, {report['task']}-label, {len(report['classes'])} classes, model {report['model']}",
        head,
        "-" * len(head),
    ]
    for name, r in report["results"].items():
        vals = "".join(
            f"{100 * r[c]:>21.2f}%" if r[c] is not None and math.isfinite(r[c]) else f"{'-':>22}" for c in cols
        )
        lines.append(f"{name:<12}{vals}{r['images']:>9}{r['seconds']:>9.1f}")
    low = format_low_shot(report["results"])
    return "\n".join(lines + (["low-shot linear probe:", *low] if low else []))
