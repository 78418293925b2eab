"""Config values as the dataclasses declare them: a recipe's or --set's raw value coerced to the field's type (bool,
int, float, str, tuples, optional), unknown keys and wrong types refused naming the key, and a section back to a dict."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def section_dict(section: Any) -> dict[str, Any]:
    return {
        f.name: list(v) if isinstance(v := getattr(section, f.name), tuple) else v for f in dataclasses.fields(section)
    }


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """value checked against the annotation tp (str, int, float, bool, X | None, tuple[X, ...])."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        for arg in args[:-1]:  # X | Y: the first type the value fits
            try:
                return _coerce(key, value, arg)
            except ValueError:
                pass
        try:
            return _coerce(key, value, args[-1])
        except ValueError:
            raise ValueError(
                f"{key}: expected {' or '.join(map(_type_name, args))}, got {value!r} ({type(value).__name__})"
            ) from None
    if origin is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if isinstance(value, str):  # --set data.masks=a,b
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list of {_type_name(item)}, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value))
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[tp]
    if not ok:
        raise ValueError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return float(value) if tp is float else value


def build_section(name: str, section_cls: type, body: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(section_cls)
    allowed = [f.name for f in dataclasses.fields(section_cls)]
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ValueError(f"unknown key(s) {[f'{name}.{k}' for k in unknown]}; allowed in [{name}]: {allowed}")
    return section_cls(**{k: _coerce(f"{name}.{k}", v, hints[k]) for k, v in body.items()})
