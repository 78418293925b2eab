"""`tagstream --help` lists every command from the registry without importing the loader, numba, torch or DALI;
every registry entry names a command that exists."""

from __future__ import annotations

import subprocess
import sys

import click

from tagstream.tools.cli import BENCHES, COMMANDS, bench, main

HEAVY = ("numba", "torch", "nvidia.dali", "tagstream.loader", "lmdb")


def test_help_lists_every_command_without_heavy_imports():
    code = (
        "import sys\n"
        "from tagstream.tools.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    *listing, heavy = out.strip().splitlines()
    assert heavy == "[]", heavy
    text = "\n".join(listing)
    assert all(name in text for name in COMMANDS), text


def test_every_registry_entry_is_a_command_with_help():
    for group, registry in ((main, COMMANDS), (bench, BENCHES)):
        ctx = click.Context(group)
        for name, (_, line) in registry.items():
            command = group.get_command(ctx, name)
            assert isinstance(command, click.Command) and command.help, name
            assert line.endswith(".") and len(line) <= 100, line
