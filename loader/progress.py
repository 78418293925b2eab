"""Progress for people and for logs: a tqdm bar when stderr is a terminal; otherwise (a log file, a pipe, a
batch scheduler) a plain line every `interval` seconds and one at the end, so no carriage returns or cursor
escape codes pile up in the log. One helper for every long loop (convert, train, embed, benchmarks)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def progress_bar(
    *,
    total: int | None = None,
    initial: int = 0,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
    interval: float = 30.0,
    file: TextIO | None = None,
    **tqdm_options: Any,
) -> Any:
    """tqdm(total=..., initial=..., desc=..., unit=..., disable=..., **tqdm_options) on a terminal, else a
    LogProgress with the same update/set_postfix/close calls."""
    stream = sys.stderr if file is None else file
    if disable or _is_terminal(stream):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable, file=stream, **tqdm_options)
    return LogProgress(total=total, initial=initial, desc=desc, unit=unit, interval=interval, file=stream)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


class LogProgress:
    """Plain progress lines: `desc: 1200/5000 (24.0%) 85.3 img/s, loss=2.31` at most once per `interval`."""

    def __init__(self, *, total: int | None, initial: int, desc: str, unit: str, interval: float, file: TextIO):
        self.total, self.n, self.desc, self.unit, self.interval, self.file = total, initial, desc, unit, interval, file
        self._start_n = initial
        self._t0 = self._last = time.monotonic()
        self._postfix = ""
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._emit(now)

    def set_postfix(self, **values: Any) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._emit(time.monotonic(), final=True)

    def _emit(self, now: float, *, final: bool = False) -> None:
        done = f"{self.n}/{self.total} ({100 * self.n / self.total:.1f}%)" if self.total else f"{self.n}"
        elapsed = now - self._t0
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        line = f"{self.desc + ': ' if self.desc else ''}{done} {rate:.1f} {self.unit}/s"
        line += f", {self._postfix}" if self._postfix else ""
        line += f" (done in {elapsed:.1f} s)" if final else ""
        print(line, file=self.file, flush=True)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
