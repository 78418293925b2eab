"""The rehearsal's step measurement: peak RSS counts mapped file pages a step touched, the sampled peak anonymous
memory does not (a step that reads every shard through a memory map is not charged the dataset as its heap)."""

from __future__ import annotations

import sys

from tagstream.tools.bench.rehearsal_measure import run_forked, run_measured

_MIB = 2**20


def _child(code: str, tmp_path, name: str):
    script = "import time\n" + code + "\ntime.sleep(0.5)\n"  # held long enough for several 0.1 s samples
    return run_measured([sys.executable, "-c", script], log=tmp_path / f"{name}.log")


def test_heap_is_anonymous_and_mapped_file_pages_are_not(tmp_path):
    heap = _child("x = bytearray(300 * 2**20)\nx[::4096] = b'1' * len(x[::4096])", tmp_path, "heap")
    assert heap.returncode == 0 and heap.peak_anon_mib >= 250 and heap.peak_rss_mib >= 250

    data = tmp_path / "shard.bin"
    with open(data, "wb") as f:
        f.truncate(300 * _MIB)
    mapped = _child(
        f"import mmap\nf = open({str(data)!r}, 'rb')\nm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)\n"
        "s = sum(m[i] for i in range(0, len(m), 4096))",
        tmp_path,
        "mapped",
    )
    assert mapped.returncode == 0 and mapped.peak_rss_mib >= 250
    assert mapped.peak_anon_mib < 150, mapped  # the interpreter's own heap, not the 300 MiB of file pages


def test_forked_step_samples_its_anonymous_peak(tmp_path):
    def grow():
        import time

        x = bytearray(200 * _MIB)
        x[::4096] = b"1" * len(x[::4096])
        time.sleep(0.5)

    m = run_forked(grow, log=tmp_path / "forked.log")
    assert m.returncode == 0 and m.peak_anon_mib >= 150 and m.cpu_s > 0
