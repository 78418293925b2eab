"""What one rehearsal step costs: wall time, CPU time (user + sys) of the step's whole process tree, the peak RSS
of its largest process, from the kernel's rusage of reaped children (`os.wait4`), and the disk of a folder.

A child's rusage covers the descendants it reaped itself. Processes that leave the tree are not in it: the
rehearsal makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so orphans are re-parented to it and
reaped after the step with their rusage added; and since Ray's workers are reaped by nobody in the tree (their
CPU time was missing from the rusage), every descendant is also sampled from /proc every 0.1 s while the step
runs. The step's CPU time is the larger of the two sums: the rusage is exact for what was reaped, the samples a
lower bound (up to 0.1 s of each process's last moments, and processes shorter than a sample, are missed).
Processes the rehearsal started itself and keeps (the S3 server) are never reaped here.

Peak RSS (the kernel's ru_maxrss) counts the file pages a process has mapped and touched: a step reading every
shard through LMDB's memory map shows the dataset's size there, pages the kernel drops when memory is short. The
same samples also read each process's RssAnon (/proc/PID/status: its own heap and stacks, what it cannot give
back), so the step's peak anonymous memory is reported beside it (a lower bound: a peak shorter than 0.1 s is
missed).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tagstream.tools.bench.proc_stats import status_value

_PR_SET_CHILD_SUBREAPER = 36
_ORPHAN_GRACE_S = 10.0
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Measured:
    """One step's cost; `lingering`: descendants still alive after the grace period (left running); cpu_s is
    max(cpu_rusage_s, cpu_sampled_s)."""

    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    returncode: int
    lingering: int = 0
    cpu_rusage_s: float = 0.0
    cpu_sampled_s: float = 0.0
    peak_anon_mib: float | None = None  # the largest process's sampled RssAnon; None where not sampled


def _proc_table() -> dict[int, tuple[int, float, int]]:
    """pid -> (parent pid, CPU seconds of its own (utime + stime), start time in ticks) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2 :].split()  # fields from 3 (state) on: f[i] is field i + 3
        table[int(entry)] = (int(f[1]), (int(f[11]) + int(f[12])) / _TICK, int(f[19]))
    return table


class TreeSampler:
    """The own CPU time of every process seen in a tree (the root, its descendants, orphans re-parented to this
    process), by (pid, start time), so a process that later leaves the tree is still followed."""

    def __init__(self, root: int, keep: set[int]):
        self.root, self.keep, self.seen = root, keep, {}
        self.peak_anon_kib = 0

    def sample(self) -> None:
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        me = os.getpid()
        todo = [self.root] + [p for p in children.get(me, []) if p not in self.keep and p != self.root]
        while todo:
            pid = todo.pop()
            if pid in table:
                self.seen[(pid, table[pid][2])] = table[pid][1]
                self.peak_anon_kib = max(self.peak_anon_kib, status_value(pid, "RssAnon"))
                todo.extend(children.get(pid, []))
        for pid, start in list(self.seen):  # escaped ones still alive
            if pid in table and table[pid][2] == start:
                self.seen[(pid, start)] = table[pid][1]

    @property
    def cpu_s(self) -> float:
        return sum(self.seen.values())


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _cpu(ru) -> float:
    return ru.ru_utime + ru.ru_stime


def _status_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


def _children(keep: set[int]) -> list[int]:
    """Pids of this process's living children other than `keep` (from /proc)."""
    me, out = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in keep:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == me and fields[0] != "Z":
            out.append(int(entry))
    return out


def _reap_orphans(keep: set[int], wait_s: float) -> tuple[float, float, int]:
    """Reap exited children not in `keep` for up to wait_s while any other child lives: (cpu s, max rss KiB,
    children still alive)."""
    cpu, rss = 0.0, 0
    deadline = time.monotonic() + wait_s
    while True:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None
            if info is None or info.si_pid in keep:
                break
            _, _, ru = os.wait4(info.si_pid, 0)
            cpu, rss = cpu + _cpu(ru), max(rss, ru.ru_maxrss)
        alive = _children(keep)
        if not alive or time.monotonic() > deadline:
            return cpu, rss, len(alive)
        time.sleep(0.1)


def run_measured(
    argv: list[str],
    *,
    log: Path,
    env: dict[str, str] | None = None,
    keep: set[int] = frozenset(),
    watch: Callable[[subprocess.Popen], None] | None = None,
    timeout_s: float | None = None,
) -> Measured:
    """Run argv with stdout and stderr appended to `log`; `watch(proc)` is called every 0.1 s while it runs (the
    train step's kill); past timeout_s the child is killed."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

        def tick() -> None:
            if watch is not None:
                watch(proc)
            if timeout_s is not None and time.perf_counter() - start > timeout_s:
                os.killpg(proc.pid, signal.SIGKILL)

        measured = _wait_measured(proc.pid, start, keep, _ORPHAN_GRACE_S, tick)
    proc.returncode = measured.returncode  # reaped here: Popen must not wait for it again
    return measured


def run_forked(fn: Callable[[], object], *, log: Path, keep: set[int] = frozenset()) -> Measured:
    """Run fn() in a forked child (its output appended to `log`), measured like a command."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: run, report a failure in the log, never return into the caller's code
        code = 0
        try:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            fn()
        except BaseException:  # noqa: BLE001 - whatever happens, the child must exit here
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return _wait_measured(pid, start, keep, 1.0)


def _wait_measured(
    pid: int, start: float, keep: set[int], grace_s: float, tick: Callable[[], None] | None = None
) -> Measured:
    """Sample the tree of child `pid` every 0.1 s until it ends (`tick()` between samples), reap it and the orphans
    it left (waiting up to grace_s for them), and measure it from `start` (a perf_counter reading)."""
    sampler = TreeSampler(pid, set(keep))
    while True:
        sampler.sample()
        done, status, ru = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if tick is not None:
            tick()
        time.sleep(0.1)
    wall = time.perf_counter() - start
    sampler.sample()  # orphans re-parented to this process since the last sample
    cpu, rss, lingering = _reap_orphans(set(keep), grace_s)
    rusage = _cpu(ru) + cpu
    return Measured(
        wall_s=wall,
        cpu_s=max(rusage, sampler.cpu_s),
        peak_rss_mib=max(ru.ru_maxrss, rss) / 1024,
        returncode=_status_code(status),
        lingering=lingering,
        cpu_rusage_s=rusage,
        cpu_sampled_s=sampler.cpu_s,
        peak_anon_mib=sampler.peak_anon_kib / 1024,
    )


def disk_bytes(folder: Path) -> int:
    """Bytes allocated on disk under folder (st_blocks, so sparse LMDB files count what they hold), links not
    followed."""
    total = 0
    for root, dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def descendants(root: int) -> list[int]:
    """Pids of every living descendant of root."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in _proc_table().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out
