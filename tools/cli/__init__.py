"""The `tagstream` click group. Each command lives in its own module and is imported only when run,
so `tagstream --help` stays fast and heavy libraries (DALI, torch) load only for commands that need them."""

from __future__ import annotations

import importlib

import click

from tagstream.loader import __version__

# command name -> "module:attribute" inside tagstream.tools.cli
COMMANDS = {
    "synth": "synth:synth",
    "convert": "convert:convert",
    "merge": "merge:merge",
    "inspect": "inspect_dataset:inspect",
    "verify": "verify:verify",
    "push": "push:push",
    "vocab": "vocab:vocab",
    "dedup": "dedup:dedup",
    "train": "train:train",
    "transfer": "transfer:transfer",
    "embed": "embed:embed",
    "demo": "demo:demo",
}

BENCHES = {
    "sampler": "bench_sampler:bench_sampler",
    "loader": "bench_loader:bench_loader",
    "dedup": "bench_dedup:bench_dedup",
    "convert": "bench_convert:bench_convert",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            try:
                mod = importlib.import_module(f"tagstream.tools.cli.{module}")
            except ModuleNotFoundError as exc:
                if exc.name != f"tagstream.tools.cli.{module}":
                    raise
                return None
            return getattr(mod, attr)
        return super().get_command(ctx, name)


class SectionedCommand(click.Command):
    """A click command whose --help lists some options under headings of their own, after the general ones
    (`sections`: heading -> option names; an option may sit under several headings)."""

    def __init__(self, *args, sections: dict[str, tuple[str, ...]], **kwargs):
        super().__init__(*args, **kwargs)
        self.sections = sections

    def format_options(self, ctx, formatter):
        placed = {name for names in self.sections.values() for name in names}
        records = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx) if isinstance(p, click.Option)}
        general = [r for name, r in records.items() if r is not None and name not in placed]
        with formatter.section("Options"):
            formatter.write_dl(general)
        for heading, names in self.sections.items():
            rows = [records[name] for name in names if records.get(name) is not None]
            if rows:
                with formatter.section(heading):
                    formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tagstream")
def main() -> None:
    """tagstream: weakly supervised pretraining on hashtags at billion scale.

    \b
    Typical flow:
      tagstream synth demo-src                      # a synthetic hashtag world
      tagstream convert demo-src/hashtags.jsonl ds  # images + hashtags -> LMDB shards
      tagstream vocab ds --name v1 --min-count 5    # a class vocabulary
      tagstream train --config tiny-cpu --dataset ds --vocab v1 --out runs/tiny
    """


@main.group(cls=LazyGroup, lazy=BENCHES)
def bench() -> None:
    """Benchmarks: each compares against a baseline in the same run and prints ratios."""
