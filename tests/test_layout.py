"""The layout's rules, checked on the source (ast, no imports): dependencies run one way (tools -> train -> loader
-> kernels), inside loader/ the wings run one way (data <- sampling <- pipeline <- the API modules), code outside
loader/ imports only its faces (benchmarks and tests may reach inside), kernels/ imports only NumPy and Numba,
train/ never imports DALI, no relative imports, no import cycle between modules (module-level, inside functions or
named in an importlib string), no module over 400 lines, command modules stay thin, and no test imports another
test module."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"kernels": 0, "loader": 1, "train": 2, "tools": 3}  # a package may import only lower ranks
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(("tagstream", *parts[:-1])) if parts[-1] == "__init__" else ".".join(("tagstream", *parts))
            out[name] = path
    return out


MODULES = _modules()


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:` (annotations only: never executed)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _imports(path: Path, *, strings: bool = False) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) of every import statement in a file (not those under
    `if TYPE_CHECKING:`); with `strings`, also modules named in strings: importlib.import_module("tagstream.x.y")
    and "tagstream.x.y:Name" (the registry form)."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    top = {id(n) for n in tree.body}
    skip = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append(("." * node.level + (node.module or ""), node.lineno, id(node) in top))
            else:
                base = node.module or ""
                # `from tagstream.loader import format` imports a module: count the submodule
                found += [
                    (f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base, node.lineno, id(node) in top)
                    for a in node.names
                ]
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str):
            name, colon, _ = node.value.partition(":")
            if colon and name in MODULES:  # "module:Name", the registry form
                found.append((name, node.lineno, False))
        elif (
            strings and isinstance(node, ast.Call) and ast.unparse(node.func).endswith(("import_module", "__import__"))
        ):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and arg.value in MODULES:
                found.append((arg.value, node.lineno, False))
    return found


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "tagstream" and parts[1] in PACKAGES else None


def test_the_layout_is_found():
    assert "tagstream.loader.data.writer" in MODULES and "tagstream.tools.cli" in MODULES and len(MODULES) > 60


WINGS = {"data": 0, "sampling": 1, "pipeline": 2}  # loader's wings; its top-level modules (the API) rank above
FACES = ("tagstream.loader", *(f"tagstream.loader.{w}" for w in WINGS))
MAY_REACH_INSIDE = ("tagstream.tools.bench",)  # benchmarks measure the rooms themselves


def _wing(module: str) -> int | None:
    """The rank of a loader module's wing (the API modules: len(WINGS)); None outside loader/."""
    parts = module.split(".")
    if parts[:2] != ["tagstream", "loader"]:
        return None
    return WINGS.get(parts[2], len(WINGS)) if len(parts) > 2 else len(WINGS)


def _face_names(face: str) -> set[str]:
    """What a face exports: the names in its __all__."""
    tree = ast.parse(MODULES[face].read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


PUBLIC = set(FACES) | {f"{face}.{name}" for face in FACES for name in _face_names(face) if f"{face}.{name}" in MODULES}


def test_the_faces_export_what_they_import():
    for face in FACES:
        assert _face_names(face), f"{face} has no __all__"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_rules(name):
    path = MODULES[name]
    own = _package(name)
    lines = path.read_text().count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (split past {MAX_LINES})"
    for target, line, _ in _imports(path):
        where = f"{path.relative_to(ROOT)}:{line} imports {target}"
        assert not target.startswith("."), f"{where}: use absolute imports"
        other = _package(target)
        if other is not None:
            assert PACKAGES[other] <= PACKAGES[own], f"{where}: {own}/ may not import {other}/"
        if own == "kernels":
            root = target.split(".")[0]
            assert root in {"numpy", "numba", "tagstream"} or root in sys.stdlib_module_names, (
                f"{where}: kernels/ imports only NumPy and Numba"
            )
        if own == "train":
            assert not target.startswith("nvidia"), f"{where}: train/ never imports DALI"
        if _wing(target) is not None and _wing(name) is None and not name.startswith(MAY_REACH_INSIDE):
            assert target in PUBLIC, f"{where}: outside loader/, import its faces ({', '.join(FACES)})"
        if _wing(target) is not None and _wing(name) is not None:
            assert _wing(target) <= _wing(name), (
                f"{where}: loader's wings import one way (data <- sampling <- pipeline <- API)"
            )


def test_no_import_cycle_between_modules():
    """Imports between tagstream modules form no cycle: at module level, inside functions, or through a module
    named in a string (importlib, "module:Class" registries)."""
    graph = {
        name: {t for t, _, _ in _imports(path, strings=True) if t in MODULES and t != name}
        for name, path in MODULES.items()
    }
    for name in graph:  # a package imports its own submodules in __init__: that edge is not a cycle
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m) :] + [m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("tagstream.tools.cli.")))
def test_command_modules_are_thin(name):
    """A command module parses, calls one library function and prints: no module-level library code."""
    tree = ast.parse(MODULES[name].read_text())
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    commands = [
        n
        for n in defs
        if any("command" in ast.unparse(d) or "group" in ast.unparse(d) for d in getattr(n, "decorator_list", []))
    ]
    helpers = [n.name for n in defs if n not in commands and not n.name.startswith("_")]
    assert not helpers, (
        f"{MODULES[name].relative_to(ROOT)}: public non-command functions {helpers} belong in the job's library"
    )


def test_no_test_imports_another_test_module():
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for target, line, _ in _imports(path):
            leaf = target.rsplit(".", 1)[-1]
            assert not leaf.startswith("test_") and leaf != "conftest", (
                f"{path.relative_to(ROOT)}:{line} imports {target}"
            )
