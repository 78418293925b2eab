"""Memory bounds of conversion inputs: small files that expand into gigabytes are rejected from what their
headers and footers say, before the bytes are read. Each case runs `tagstream convert` in a child process and
bounds its peak RSS (getrusage of the children; a bare conversion peaks at ~170 MiB here, 2026-12-05)."""

from __future__ import annotations

import json

import pytest

from tests.helpers.bombs import peak_rss_mib, tar_gz_of_empty_members, tar_gz_of_zero_members

CLI = "import sys; from tagstream.tools.cli import main; sys.argv = ['tagstream', *sys.argv[1:]]; main()"
BOUND_MIB = 300  # the conversion's own ~170 MiB, pyarrow's import, and the bounded window


def convert_peak(*args: str) -> tuple[float, str, int]:
    peak, done = peak_rss_mib(CLI, "convert", *args, "--no-progress")
    return peak, done.stdout + done.stderr, done.returncode


def rejects(out) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def test_parquet_cell_of_zeros_rejected_from_the_footer(tmp_path):
    """A 4 KB Parquet file with one zstd cell of 100 MB (the issue's was 1.5 GB in 57 KB: 6 GB RSS)."""
    pytest.importorskip("pyarrow")
    src = tmp_path / "bomb.parquet"
    make = "import sys; from pathlib import Path; from tests.helpers.bombs import parquet_zero_cell as z; "
    peak_rss_mib(make + f"z(Path({str(src)!r}), 100_000_000)")  # made in a child: its copies stay there
    assert src.stat().st_size < 20_000
    peak, output, rc = convert_peak(
        str(src), str(tmp_path / "ds"), "--image-column", "jpg", "--max-file-bytes", str(1 << 20)
    )
    assert rc != 0 or "rejected  1" in output
    assert peak < BOUND_MIB, f"peak {peak:.0f} MiB"
    (reject,) = rejects(tmp_path / "ds")
    assert reject["reason"] == "file_too_large" and "not read" in reject["detail"]


def test_tar_gz_of_zero_filled_members_rejected_from_their_headers(tmp_path):
    """Three zero-filled 200 MiB members in a 0.6 MB .tar.gz, two workers (the issue's peaked at 6.7 GB)."""
    src = tar_gz_of_zero_members(tmp_path / "zeros.tar.gz", 3, 200 << 20)
    assert src.stat().st_size < 1 << 20
    peak, output, _ = convert_peak(str(src), str(tmp_path / "ds"), "--workers", "2")
    assert peak < BOUND_MIB, f"peak {peak:.0f} MiB"
    assert [r["reason"] for r in rejects(tmp_path / "ds")] == ["file_too_large"] * 3


@pytest.mark.parametrize("members", [100_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
def test_tar_gz_of_empty_members(tmp_path, members):
    """Every empty member its own sample: a reject each, tarfile's header list not kept (10^6 took 2 GB).
    What still grows is the rejects of the shard being written (~380 bytes each: 545 MiB at 10^6)."""
    src = tar_gz_of_empty_members(tmp_path / "empty.tar.gz", members)
    peak, output, rc = convert_peak(str(src), str(tmp_path / "ds"))
    # every input rejected: the conversion is refused in one line (issue 24), the rejects written for reading
    assert rc == 1 and output.count("\n") == 1 and "Traceback" not in output
    assert f"every one of the {members} inputs" in output and f"(empty_file {members})" in output
    assert peak < BOUND_MIB + members * 400 / 2**20 - 40, f"peak {peak:.0f} MiB"


def test_one_sample_of_many_members_rejected(tmp_path):
    src = tar_gz_of_empty_members(tmp_path / "one.tar.gz", 20_000, one_sample=True)
    peak, output, _ = convert_peak(str(src), str(tmp_path / "ds"))
    (reject,) = rejects(tmp_path / "ds")
    assert reject["reason"] == "too_many_members" and peak < BOUND_MIB
