"""Read slices of a 1-D .npy file with plain file reads, never mapping the file.

Why not np.load(mmap_mode="r")[lo:hi]: pages of a mapping stay in the process's resident set until it is
unmapped, so one pass over a 16 GB label file through a mapping grows a process to 16 GB of (clean,
file-backed) RSS. A read of [lo, hi) costs exactly hi - lo items of memory, whatever the file's size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tagstream.loader.data import format as fmt


class NpyRange:
    """A 1-D .npy file opened for slices: shape and dtype from its header, then reads at offsets."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(f)
                self.offset = f.tell()
        except Exception as exc:  # noqa: BLE001 - numpy's header parser raises SyntaxError, TokenError... too
            why = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            raise fmt.FormatError(f"{self.path}: not a readable .npy file: {why}") from None
        if len(shape) != 1 or dtype.hasobject:
            raise fmt.FormatError(f"{self.path}: expected a 1-D numeric array, got shape {shape} dtype {dtype}")
        self.dtype: np.dtype = dtype
        self.size = int(shape[0])

    def __len__(self) -> int:
        return self.size

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Items [lo, hi) as a fresh array (native byte order)."""
        if not 0 <= lo <= hi <= self.size:
            raise IndexError(f"{self.path}: range [{lo}, {hi}) outside [0, {self.size})")
        out = np.empty(hi - lo, dtype=self.dtype)
        view = memoryview(out.view(np.uint8))
        fd = os.open(self.path, os.O_RDONLY)
        try:
            pos, done = self.offset + lo * self.dtype.itemsize, 0
            while done < view.nbytes:
                got = os.preadv(fd, [view[done:]], pos + done)
                if got == 0:
                    raise fmt.FormatError(f"{self.path}: file ends before item {hi}")
                done += got
        finally:
            os.close(fd)
        return out.astype(self.dtype.newbyteorder("="), copy=False)
