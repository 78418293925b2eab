"""The layout's rules, checked on the source (ast, no imports): dependencies run one way (tools -> train -> loader
-> kernels), kernels/ imports only NumPy and Numba, train/ never imports DALI, no relative imports, no import cycle
between modules, no module over 400 lines, command modules stay thin, and no test imports another test module."""

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


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) of every import statement in a file."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
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
    return found


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "tagstream" and parts[1] in PACKAGES else None


def test_the_layout_is_found():
    assert "tagstream.loader.writer" in MODULES and "tagstream.tools.cli" in MODULES and len(MODULES) > 60


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


def test_no_import_cycle_between_modules():
    """Module-level imports between tagstream modules form no cycle (imports inside functions are lazy by design)."""
    graph = {
        name: {t for t, _, top in _imports(path) if top and t in MODULES and t != name}
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
