"""progress_bar: tqdm on a terminal; plain, periodic lines (no carriage returns, no cursor codes) elsewhere."""

from __future__ import annotations

import io

from tagstream.loader.progress import LogProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_plain_lines_with_the_postfix():
    log = io.StringIO()
    bar = progress_bar(total=4, desc="convert", unit="img", file=log, interval=0.0, smoothing=0.1)
    assert isinstance(bar, LogProgress)
    for _ in range(4):
        bar.update(1)
    bar.set_postfix(loss="2.3100")
    bar.close()
    bar.close()  # once only
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert [line.split(" ")[1] for line in lines[:4]] == ["1/4", "2/4", "3/4", "4/4"]
    assert lines[-1].startswith("convert: 4/4 (100.0%)") and "loss=2.3100" in lines[-1] and "done in" in lines[-1]
    assert len(lines) == 5


def test_a_log_is_not_flooded():
    log = io.StringIO()
    with progress_bar(total=100_000, desc="train", unit="step", file=log, interval=3600.0) as bar:
        for _ in range(100_000):
            bar.update(1)
    assert log.getvalue().count("\n") == 1  # the final line only, within the hour's interval


def test_a_terminal_gets_tqdm_and_disabled_is_silent():
    from tqdm import tqdm

    tty = Terminal()
    bar = progress_bar(total=3, desc="x", file=tty)
    assert isinstance(bar, tqdm)
    bar.close()
    quiet = io.StringIO()
    off = progress_bar(total=3, file=quiet, disable=True)
    off.update(3)
    off.close()
    assert quiet.getvalue() == ""


def test_convert_progress_in_a_log(tiny_dataset):
    from click.testing import CliRunner

    from tagstream.tools.cli import main

    src = tiny_dataset.source(3)
    res = CliRunner().invoke(main, ["convert", str(src), str(src.parent / "ds"), "--progress"])
    assert res.exit_code == 0, res.output
    assert "\r" not in res.output and "\x1b" not in res.output  # were tqdm's redraws in a log
    assert "convert: 3/3 (100.0%)" in res.output
