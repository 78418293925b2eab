"""The `tagstream` click group. Each command lives in its own module and is imported only when run,
so `tagstream --help` stays fast and heavy libraries (DALI, torch) load only for commands that need them."""

from __future__ import annotations

import importlib

import click

# command name -> ("module:attribute" inside tagstream.tools.cli, the one line `tagstream --help` shows for it): the
# listing needs no import of the command, so `tagstream --help` loads neither the loader, numba, torch nor DALI
COMMANDS = {
    "synth": ("synth:synth", "Write a synthetic hashtag world (images, hashtags, a labelled downstream split)."),
    "convert": ("convert:convert", "Convert images with hashtags into a dataset (LMDB shards + NumPy index)."),
    "merge": ("merge:merge", "Merge the committed parts of a partitioned conversion into one dataset."),
    "inspect": ("inspect_dataset:inspect", "Show what a dataset holds, and how a vocabulary will be sampled."),
    "verify": ("verify:verify", "Check every shard, index and record of a dataset; name each damaged one."),
    "push": ("push:push", "Upload a dataset to object storage (s3://, gs://, ...)."),
    "vocab": ("vocab:vocab", "Build a class vocabulary from the raw tags (synonyms, WordNet, stop-tags)."),
    "dedup": ("dedup:dedup", "Mask training images that are near copies of evaluation images."),
    "train": ("train:train", "Pretrain a model on hashtags: one process, or every rank of a torchrun job."),
    "transfer": ("transfer:transfer", "Transfer a pretrained backbone to a labelled task (linear probe, fine-tune)."),
    "embed": ("embed:embed", "Write every image's pooled features in dataset order."),
    "demo": ("demo:demo", "The whole pipeline end to end on a synthetic world, with a results table."),
}

BENCHES = {
    "sampler": (
        "bench_sampler:bench_sampler",
        "Our sampler against numpy, torch.multinomial and WeightedRandomSampler.",
    ),
    "loader": ("bench_loader:bench_loader", "Our loader against a DataLoader baseline and the full-decode ceiling."),
    "dedup": ("bench_dedup:bench_dedup", "De-duplication recall and false matches on planted copies."),
    "convert": ("bench_convert:bench_convert", "Conversion images/s of each engine (processes, parts, Ray)."),
    "rehearsal": ("bench_rehearsal:bench_rehearsal", "Every stage end to end on N real JPEGs, each step measured."),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module, attr = self.lazy[name][0].split(":")
            try:
                mod = importlib.import_module(f"tagstream.tools.cli.{module}")
            except ModuleNotFoundError as exc:
                if exc.name != f"tagstream.tools.cli.{module}":
                    raise
                return None
            return getattr(mod, attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        """The command list from the registry's lines: listing imports no command."""
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy)]
        rows += [
            (n, c.get_short_help_str(formatter.width)) for n, c in sorted(self.commands.items()) if n not in self.lazy
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


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
@click.version_option(package_name="tagstream", prog_name="tagstream")
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
