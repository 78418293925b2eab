"""Small files that expand into a lot (the fault-injection cases of memory bounds), written without holding
what they expand into: zero pages are never touched (np.zeros maps them lazily) and streams are compressed in
pieces. And a child-process peak RSS measure, since a bound is about the process that reads the file."""

from __future__ import annotations

import gzip
import json
import resource
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

CHUNK = 1 << 24


def parquet_zero_cell(path: Path, cell_bytes: int, column: str = "jpg") -> Path:
    """A one-row Parquet table whose binary cell holds `cell_bytes` zero bytes, zstd-compressed (a few KB)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = pa.py_buffer(np.zeros(cell_bytes, np.uint8))  # untouched zero pages: no RSS
    offsets = pa.py_buffer(np.array([0, cell_bytes], np.int64))
    cell = pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, data])
    table = pa.table({column: cell, "tags": pa.array(["#bomb"])})
    pq.write_table(table, path, compression="zstd", use_dictionary=False, write_statistics=False)
    return path


def tar_gz_of_zero_members(path: Path, members: int, member_bytes: int) -> Path:
    """A .tar.gz of `members` zero-filled image members of `member_bytes` each, compressed as it is written."""
    with gzip.open(path, "wb", compresslevel=9) as gz:
        zeros = bytes(min(CHUNK, member_bytes))
        for i in range(members):
            info = tarfile.TarInfo(f"{i:06d}.jpg")
            info.size = member_bytes
            gz.write(info.tobuf(format=tarfile.USTAR_FORMAT))
            left = member_bytes
            while left:
                n = min(left, len(zeros))
                gz.write(zeros[:n])
                left -= n
            gz.write(bytes(-member_bytes % 512))
        gz.write(bytes(1024))
    return path


def tar_gz_of_empty_members(path: Path, members: int, *, one_sample: bool = False) -> Path:
    """A .tar.gz of `members` empty members: each its own sample (`000000.jpg`, ...) or, with one_sample, one
    sample of that many extensions (`k.e000000`, ...). Headers are patched from one template (tarfile would take
    ~10 us a member)."""
    template = bytearray(tarfile.TarInfo("k.e000000" if one_sample else "000000.jpg").tobuf(tarfile.USTAR_FORMAT))
    start = template.index(b"000000")
    template[148:156] = b" " * 8  # the checksum is computed over spaces in its own field
    base = sum(template) - sum(b"000000")
    with gzip.open(path, "wb", compresslevel=6) as gz:
        for lo in range(0, members, 100_000):
            n = min(100_000, members - lo)
            block = np.tile(np.frombuffer(bytes(template), np.uint8), (n, 1))
            digits = np.array([f"{i:06d}" for i in range(lo, lo + n)], "S6").view(np.uint8).reshape(n, 6)
            block[:, start : start + 6] = digits
            checksum = base + digits.astype(np.int64).sum(axis=1)
            octal = np.array([b"%06o\x00 " % c for c in checksum], "S8").view(np.uint8).reshape(n, 8)
            block[:, 148:156] = octal
            gz.write(block.tobytes())
        gz.write(bytes(1024))
    return path


def peak_rss_mib(code: str, *args: str, timeout: float = 600) -> tuple[float, subprocess.CompletedProcess]:
    """Run `code` in a fresh Python (argv[1:] = args) and return its children's peak RSS in MiB (getrusage of the
    children of a helper process that ran only it) and the completed process."""
    runner = (
        "import resource, subprocess, sys, json\n"
        "p = subprocess.run([sys.executable, '-c', sys.argv[1], *sys.argv[2:]], capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps({'rc': p.returncode, 'out': p.stdout, 'err': p.stderr, 'peak_kib': peak}))\n"
    )
    done = subprocess.run([sys.executable, "-c", runner, code, *args], capture_output=True, text=True, timeout=timeout)
    result = json.loads(done.stdout)
    proc = subprocess.CompletedProcess(args, result["rc"], result["out"], result["err"])
    return result["peak_kib"] / 1024, proc


__all__ = ["parquet_zero_cell", "peak_rss_mib", "resource", "tar_gz_of_empty_members", "tar_gz_of_zero_members"]
