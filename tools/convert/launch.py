"""Which engine runs a conversion: the whole input in this process, one part of it (any scheduler), or all the
parts as Ray tasks; one entry point for `tagstream convert`."""

from __future__ import annotations

from pathlib import Path

from tagstream.tools.convert.engine import ConvertSummary, convert
from tagstream.tools.convert.parts import PartSpec, PartsPlan, PartSummary, convert_part, plan_parts

ENGINES = ("local", "ray")


def run_conversion(
    src: str | Path,
    out: str | Path,
    *,
    engine: str = "local",
    part: str | None = None,
    parts: int | None = None,
    address: str | None = None,
    **options,
) -> ConvertSummary | PartSummary | PartsPlan:
    """engine 'local': convert everything here; with `part` ('I/N'): convert that part only (`tagstream merge
    OUT` joins the parts); with `parts` alone: scan once and record the plan the `--part` jobs reuse.
    engine 'ray': every part as a Ray task, then the merge."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; allowed: {', '.join(ENGINES)}")
    if engine == "ray":
        if part is not None:
            raise ValueError(
                "--part converts one part by itself; it does not go with --engine ray (which runs all parts)"
            )
        from tagstream.tools.convert.ray_engine import convert_on_ray

        return convert_on_ray(src, out, parts=parts, address=address, **options)
    if address is not None:
        raise ValueError("--address names a Ray cluster; it needs --engine ray")
    if part is not None:
        spec = PartSpec.parse(part)
        if parts is not None and parts != spec.count:
            raise ValueError(f"--parts {parts} disagrees with --part {part}")
        return convert_part(src, out, spec, **options)
    if parts is not None:
        options.pop("workers", None)
        options.pop("progress", None)
        return plan_parts(src, out, parts, **options)
    return convert(src, out, **options)
