"""What a process group holds, read from /proc (Linux): memory (RSS and PSS from smaps_rollup), open file
descriptors, threads, the POSIX shared-memory objects mapped or open (/dev/shm), and which processes are still
in the group. The soak (loader_soak.py) samples these; a process that ends between two reads counts as gone."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SHM_DIR = "/dev/shm"


def group_members(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes whose process group is `pgid`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat is not None and stat[0] != "Z" and int(stat[2]) == pgid:
            out.append(int(entry))
    return sorted(out)


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in kB, (0, 0) once it is gone."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        return 0, 0
    return rss, pss


def open_fds(pid: int) -> list[str]:
    """What a process's file descriptors point to ([] once it is gone)."""
    base = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(base)
    except OSError:
        return []
    out = []
    for fd in fds:
        try:
            out.append(os.readlink(f"{base}/{fd}"))
        except OSError:  # closed between the listing and the read
            pass
    return out


def threads(pid: int) -> int:
    return status_value(pid, "Threads")


def status_value(pid: int, field: str) -> int:
    """The number of /proc/PID/status's line `field` (kB for the memory fields; 0 once the process is gone or where
    the kernel does not report the field)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def shm_objects(pid: int, fds: list[str] | None = None) -> set[str]:
    """The /dev/shm objects a process maps or holds open, by name ("NAME (deleted)" once unlinked: DALI unlinks its
    buffers at once, so those vanish with the last process holding them)."""
    names = {link for link in (open_fds(pid) if fds is None else fds) if link.startswith(SHM_DIR + "/")}
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                path = line.split(None, 5)[5].strip() if line.count(" ") >= 5 else ""
                if path.startswith(SHM_DIR + "/"):
                    names.add(path)
    except (OSError, IndexError):
        pass
    return names


def shm_entries() -> set[str]:
    """The names now in /dev/shm (a machine-wide view: other users' entries come and go too)."""
    try:
        return {f"{SHM_DIR}/{name}" for name in os.listdir(SHM_DIR)}
    except OSError:
        return set()


def group_sample(main: int, pgid: int) -> dict:
    """One reading of a group: the main process and the sum over the others (the loader's workers)."""
    members = [p for p in group_members(pgid) if p != main]
    main_fds = open_fds(main)
    worker_fds = {p: open_fds(p) for p in members}
    rss, pss = memory_kb(main)
    worker_mem = [memory_kb(p) for p in members]
    shm = shm_objects(main, main_fds).union(*(shm_objects(p, fds) for p, fds in worker_fds.items()))
    return {
        "main_rss_mb": rss / 1024,
        "main_pss_mb": pss / 1024,
        "workers": len(members),
        "workers_rss_mb": sum(m[0] for m in worker_mem) / 1024,
        "workers_pss_mb": sum(m[1] for m in worker_mem) / 1024,
        "main_fds": len(main_fds),
        "workers_fds": sum(len(f) for f in worker_fds.values()),
        "threads": threads(main) + sum(threads(p) for p in members),
        "shm_objects": len(shm),
        "shm_names": sorted(shm),
    }


def slope_per_1000(batches: list[int], values: list[float]) -> float:
    """Least-squares slope of values against batches, per 1,000 batches (0 with fewer than 2 distinct batches)."""
    x = np.asarray(batches, np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        return 0.0
    return float(np.polyfit(x, np.asarray(values, np.float64), 1)[0] * 1000)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, ... (None once it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
