"""The `tagstream` click group. Each command lives in its own module and is imported only when run,
so `tagstream --help` stays fast and heavy libraries (DALI, torch) load only for commands that need them.

The group is every command's one error boundary (`Boundary.invoke`): a storage, format, I/O, memory, recursion,
overflow or value error becomes one line naming the file or object and what to do, exit code 1, never a traceback
(TAGSTREAM_TRACEBACK=1 shows it); and everything a command prints passes `printable` there, so a tag, a key or a
header holding terminal escapes reaches the screen as visible text.
"""

from __future__ import annotations

import errno
import importlib
import io
import os
import sys
from contextlib import contextmanager

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


# what to do about an OSError, by errno; the default is the last entry's
_OS_ADVICE = {
    errno.ENOSPC: "free some space and rerun",
    errno.EDQUOT: "free some space and rerun",
    errno.EACCES: "check its permissions",
    errno.EPERM: "check its permissions",
    errno.ENOENT: "check the path",
    errno.EMFILE: "raise the open-file limit (ulimit -n) or lower data.workers",
    errno.EROFS: "write somewhere writable",
    None: "check the path, its permissions and the free space, then rerun",
}


def error_line(exc: BaseException, command: str) -> str | None:
    """The one line a command's failure shows (None: not a failure the boundary maps, so it stays a traceback)."""
    from tagstream.loader.data import FormatError, StorageError
    from tagstream.loader.pipeline import WorkerDied

    text = " ".join(str(exc).split())  # one line, whatever the library wrote
    if isinstance(exc, StorageError):
        return f"{text}; check the URL, the credentials and the network, then rerun"
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else None
        detail = f"{where}: {exc.strerror}" if where is not None and exc.strerror else text or type(exc).__name__
        return f"{detail}; {_OS_ADVICE.get(exc.errno, _OS_ADVICE[None])}"
    if isinstance(exc, MemoryError):
        return f"{command}: out of memory{': ' + text if text else ''}; lower the batch size or the workers, or check the input for an oversized item"
    if isinstance(exc, RecursionError):
        return f"{command}: an input is nested too deeply to read ({text}); check the files it names"
    if isinstance(exc, OverflowError):
        return f"{command}: a number too large for its field ({text}); check the files and values it names"
    if isinstance(exc, EOFError):
        return f"{command}: an input ends before its end marker ({text or 'a file cut short'}); fetch it again"
    if isinstance(exc, (FormatError, ValueError, FloatingPointError, WorkerDied)):
        return text
    return None


@contextmanager
def _printable_stdout():
    """Everything printed on stdout passes `printable` while a command runs."""
    inner = sys.stdout
    sys.stdout = _Printable(inner)
    try:
        yield
    finally:
        sys.stdout = inner


class _Printable(io.TextIOBase):
    """A text stream writing `printable(text)` to the stream it wraps (whose other attributes it lends)."""

    def __init__(self, inner):
        self._inner = inner

    def write(self, text: str) -> int:
        from tagstream.tools.inspection.text import printable

        self._inner.write(printable(text))
        return len(text)

    def flush(self) -> None:
        self._inner.flush()

    def isatty(self) -> bool:
        return self._inner.isatty()

    def fileno(self) -> int:
        return self._inner.fileno()

    @property
    def encoding(self):
        return getattr(self._inner, "encoding", "utf-8")

    @property
    def errors(self):
        return getattr(self._inner, "errors", "strict")


class Boundary(LazyGroup):
    """The root group: runs every command (bench's too) inside the one error boundary."""

    def invoke(self, ctx: click.Context):
        args = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        command = " ".join(["tagstream", *args[:1]])
        ctx.color = True  # click would strip "ESC [ ... m" from a pipe's text silently; printable shows it instead
        try:
            with _printable_stdout():
                return super().invoke(ctx)
        except click.ClickException as exc:
            from tagstream.tools.inspection.text import printable

            exc.message = printable(exc.message)  # a CSV header, a tag or a key echoed in a message
            raise
        except Exception as exc:  # noqa: BLE001 - error_line says which kinds become a line; the rest re-raise
            line = error_line(exc, command)
            if line is None or os.environ.get("TAGSTREAM_TRACEBACK"):
                raise
            raise click.ClickException(line) from None


@click.group(cls=Boundary, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
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
