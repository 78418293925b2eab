"""Text bound for a terminal: tags are user data, and a hashtag holding ESC [ ... or a right-to-left override
must reach the screen as visible escapes, never as commands to the terminal (cursor moves, colours, a
title change, reordered text)."""

from __future__ import annotations

import re

# C0 controls but TAB and LF, DEL and the C1 controls (ESC, CSI, OSC ...), lone surrogates, and the
# bidirectional controls; the zero-width joiner of emoji sequences and other format characters stay
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every terminal-control character written as its escape (ESC -> \\x1b, U+202E -> \\u202e)."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), text)
