"""The fault-injection suite's parts: how many examples, the mutations (bytes cut, flipped, inserted; JSON values
replaced by hostile ones; arrays overwritten), and the one assertion every entry point must meet: a value or a
one-line refusal, never a traceback, signal or hang.

Examples per test: FUZZ_EXAMPLES (a few dozen, so the suite runs in about a minute in `make test`, derandomized so
a run repeats); `TAGSTREAM_FUZZ_EXAMPLES=2000 pytest tests -k fuzz` for the long mode, with fresh random examples.
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

LONG = int(os.environ.get("TAGSTREAM_FUZZ_EXAMPLES", "0"))
FUZZ_EXAMPLES = LONG or 25


def fuzz_settings(examples: int = FUZZ_EXAMPLES) -> settings:
    """Hypothesis settings of the suite: no deadline (a loaded machine), no database in the tree."""
    return settings(
        max_examples=LONG or examples,
        deadline=None,
        derandomize=not LONG,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# values a hostile or careless file holds where a count, a name or a table belongs
HOSTILE_VALUES = [
    -5,
    -1,
    0,
    7,
    2**31,
    2**63,
    10**30,
    1e308,
    float("nan"),
    float("inf"),
    "",
    "x",
    "../../etc",
    "\x1b[2J",
    None,
    True,
    [],
    {},
    [1, 2],
    {"a": 1},
]

DEEP = "[" * 100_000 + "]" * 100_000  # JSON nested 10^5 deep


def byte_mutation() -> st.SearchStrategy:
    """(kind, where in [0, 1), argument): cut the file, flip a byte, insert bytes, or empty it."""
    return st.tuples(
        st.sampled_from(["cut", "flip", "insert", "empty", "zero"]),
        st.floats(0, 1, exclude_max=True),
        st.binary(min_size=1, max_size=8),
    )


def mutate_bytes(path: Path, mutation: tuple) -> None:
    path.write_bytes(mutated(path.read_bytes(), mutation))


def mutated(raw: bytes, mutation: tuple) -> bytes:
    """`raw` with byte_mutation()'s mutation applied."""
    kind, where, extra = mutation
    data = bytearray(raw)
    at = int(where * len(data))
    if kind == "cut":
        data = data[:at]
    elif kind == "flip" and data:
        data[at] ^= extra[0] or 0xFF
    elif kind == "insert":
        data[at:at] = extra
    elif kind == "zero":
        data[at : at + 4096] = bytes(len(data[at : at + 4096]))
    elif kind == "empty":
        data = bytearray()
    return bytes(data)


def json_paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path inside a JSON value (the value itself is the empty path)."""
    paths = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            paths += json_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:8]):
            paths += json_paths(v, (*prefix, i))
    return paths


def json_mutation() -> st.SearchStrategy:
    """(which path, what): replace the value there by a hostile one, delete it, or nest it 10^5 deep."""
    return st.tuples(
        st.floats(0, 1, exclude_max=True),
        st.one_of(st.sampled_from(["delete", "deep"]), st.sampled_from(HOSTILE_VALUES).map(lambda v: ("set", v))),
    )


def mutate_json(path: Path, mutation: tuple) -> None:
    where, what = mutation
    obj = json.loads(path.read_text())
    paths = json_paths(obj)
    target = paths[int(where * len(paths))]
    if what == "delete" and target:
        del _get(obj, target[:-1])[target[-1]]
        text = json.dumps(obj)
    else:
        value = "@DEEP@" if what == "deep" else (None if what == "delete" else what[1])
        text = json.dumps(_set(obj, target, value)).replace('"@DEEP@"', DEEP)  # NaN/Infinity as readers accept
    path.write_text(text)


def _get(obj: Any, path: tuple) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def _set(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(obj, path[:-1])[path[-1]] = value
    return obj


def array_mutation() -> st.SearchStrategy:
    """(start, length fraction, value): overwrite a run of an array's entries."""
    return st.tuples(
        st.floats(0, 1, exclude_max=True), st.floats(0, 1), st.sampled_from([-(2**62), -1, 0, 1, 7, 2**31 - 1, 2**62])
    )


def mutate_array(path: Path, mutation: tuple) -> None:
    where, fraction, value = mutation
    a = np.load(path)
    if a.size:
        lo = int(where * a.size)
        hi = max(lo + 1, int(lo + fraction * (a.size - lo)))
        info = np.iinfo(a.dtype) if a.dtype.kind in "iu" else None
        a[lo:hi] = np.clip(value, info.min, info.max) if info is not None else value
    np.save(path, a)


def one_line_or_refusal(call: Callable[[], Any], refusals: tuple[type[BaseException], ...]) -> Any:
    """call()'s value, or the refusal it raised when that is one of `refusals` with a one-line message; anything
    else (another exception: a traceback for the user) fails the example."""
    try:
        return call()
    except refusals as exc:
        text = str(exc)
        assert text and "\n" not in text, f"{type(exc).__name__} not one line: {text!r}"
        return exc


def cli_one_line(result) -> None:
    """A CliRunner result: success, or exit 1 with one 'Error: ...' line at the end; never an exception."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code:
        assert result.exit_code == 1, result.output
        last = result.output.rstrip("\n").splitlines()[-1]
        assert last.startswith("Error: ") and "Traceback" not in result.output, result.output


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
