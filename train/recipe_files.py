"""The recipes shipped in tagstream/train/recipes/*.toml: their names, and a recipe's raw tables by name or path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import tomllib


def recipe_names() -> list[str]:
    """Recipes shipped in tagstream/train/recipes (usable as --config NAME)."""
    return sorted(
        p.name[:-5]
        for p in resources.files("tagstream.train").joinpath("recipes").iterdir()
        if p.name.endswith(".toml")
    )


def read_recipe(path_or_name: str | Path) -> dict[str, Any]:
    """A recipe's raw tables: a TOML file path, or the name of a shipped recipe (e.g. "tiny-cpu")."""
    path = Path(path_or_name)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
    else:
        name = path.name[:-5] if path.name.endswith(".toml") else path.name
        if name not in recipe_names():
            raise ValueError(
                f"config {str(path_or_name)!r} is neither a file nor a shipped recipe; recipes: {recipe_names()}"
            )
        text = resources.files("tagstream.train").joinpath("recipes", f"{name}.toml").read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path_or_name}: not valid TOML: {exc}") from None


__all__ = ["read_recipe", "recipe_names"]
