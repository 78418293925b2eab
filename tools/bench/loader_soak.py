"""`tagstream bench loader --soak`: a long run of the public loader per CPU decoder ("turbo": the workers decode;
"dali": DALI's CPU decoder), sampling memory (RSS, PSS), open files, threads and /dev/shm objects of the loader's
process and of its workers every few batches; then its exits: a normal close, SIGINT to the loader's process, and
SIGKILL of one worker mid-epoch, which the loader must name. Each run is a child process in a session of its own,
so whatever it leaves behind (a process of its group, a /dev/shm name) is found. Figures are reported, never
asserted; the exit checks pass or fail."""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from tagstream.tools.bench.loader import bench_config, prepare_dataset
from tagstream.tools.bench.loader_ceiling import usable_cores
from tagstream.tools.bench.proc_stats import group_members, group_sample, shm_entries, slope_per_1000

DECODERS = ("turbo", "dali")
# an exit path slower than this is a hang; a start-up slower than START_BOUND_S (imports, first batches on a loaded
# machine) too
EXIT_BOUND_S = 60.0
START_BOUND_S = 600.0
MARK = "SOAK "  # the child's report lines on stdout start with it; anything else there is someone's print
SUMMARISED = ("main_rss_mb", "main_pss_mb", "workers_pss_mb", "main_fds", "workers_fds", "threads", "shm_objects")
CHILD = "tagstream.tools.bench.loader_soak"


def soak_loader(
    dataset: str | Path,
    *,
    make: int | None,
    batches: int,
    batch_size: int,
    workers: int,
    threads: int,
    image_size: int,
    epochs: int = 3,
    every: int | None = None,
    decoders: tuple[str, ...] = DECODERS,
    progress: Callable[[str, int], Callable[[int], None]],
) -> dict:
    """`batches` batches over `epochs` epochs per decoder (the first epoch is the warm-up the slopes leave out), a
    reading every `every` batches (default: ~100 readings), then the exit checks; returns the report."""
    if epochs < 2:
        raise ValueError(f"epochs={epochs} must be >= 2: the first is the warm-up the slopes leave out")
    per_epoch = batches // epochs
    if per_epoch < 2:
        raise ValueError(f"batches={batches} gives no 2 batches in each of {epochs} epochs; raise --batches")
    every = every or max(1, per_epoch * epochs // 100)
    ds = prepare_dataset(dataset, make=make, workers=workers, progress=progress)
    spec = {
        "dataset": str(ds.root),
        "batch_size": batch_size,
        "workers": workers,
        "threads": threads,
        "image_size": image_size,
        "per_epoch": per_epoch,
        "epochs": epochs,
        "every": every,
    }
    result: dict = {**spec, "images": len(ds), "batches": per_epoch * epochs, "cores": usable_cores()}
    result["load_before"] = list(os.getloadavg())
    result["decoders"], exits = {}, []
    for decoder in decoders:
        tick = progress(f"soak ({decoder} decode)", per_epoch * epochs)
        run, exit_check = soak_run({**spec, "decoder": decoder}, tick)
        result["decoders"][decoder] = run
        exits.append(exit_check)
    for decoder in decoders:
        exits.append(sigint_check({**spec, "decoder": decoder}))
    exits.append(kill_worker_check({**spec, "decoder": "turbo", "workers": max(workers, 1)}))
    result["exits"] = exits
    result["exits_ok"] = all(check["ok"] for check in exits)
    result["load_after"] = list(os.getloadavg())
    return result


def soak_run(spec: dict, tick: Callable[[int], None]) -> tuple[dict, dict]:
    """One decoder's soak in a child: (the summary of its readings, the check of its normal close)."""
    child = Child("soak", spec)
    samples, closed = [], None
    while closed is None:
        event = child.event(START_BOUND_S)
        if event is None:
            child.finish()
            raise RuntimeError(f"the {spec['decoder']} soak ended without its report: {child.stderr_tail()}")
        if event["event"] == "sample":
            tick(event["batch"] - (samples[-1]["batch"] if samples else 0))
            samples.append(event)
        elif event["event"] == "closed":
            closed = event
    check = child.finish()
    check.update(check="normal close", decoder=spec["decoder"])
    check["ok"] = check["ok"] and check["rc"] == 0
    return summarise(samples, closed, warmup=spec["per_epoch"]), check


def summarise(samples: list[dict], closed: dict, *, warmup: int) -> dict:
    """start / end / max of each reading, and its slope per 1,000 batches over the readings after `warmup` batches."""
    steady = [s for s in samples if s["batch"] > warmup] or samples
    out: dict = {"readings": len(samples), "seconds": closed["seconds"], "batches": closed["batches"]}
    out["images_per_s"] = closed["batches"] * closed["batch_size"] / closed["seconds"]
    for key in SUMMARISED:
        values = [s[key] for s in samples]
        out[key] = {
            "start": values[0],
            "end": values[-1],
            "max": max(values),
            "slope_per_1000": slope_per_1000([s["batch"] for s in steady], [s[key] for s in steady]),
        }
    out["workers"] = max(s["workers"] for s in samples)
    out["after_close"] = {k: closed[k] for k in ("main_rss_mb", "workers", "main_fds", "threads", "shm_objects")}
    out["samples"] = [{k: s[k] for k in ("batch", "epoch", *SUMMARISED)} for s in samples]
    return out


def sigint_check(spec: dict) -> dict:
    """SIGINT to the loader's process mid-epoch (what Ctrl-C sends it): it must exit within the bound, leaving
    nothing behind."""
    child = Child("run", {**spec, "ready_after": 5})
    ready = child.event(START_BOUND_S)
    if ready is None or ready["event"] != "ready":
        return {**child.finish(), "check": "SIGINT", "decoder": spec["decoder"], "ok": False, "why": "never started"}
    t0 = time.monotonic()
    os.kill(child.proc.pid, signal.SIGINT)
    check = child.finish()
    check.update(check="SIGINT", decoder=spec["decoder"], exit_s=time.monotonic() - t0)
    return check


def kill_worker_check(spec: dict) -> dict:
    """SIGKILL of one worker mid-epoch: the loader must raise one line naming it (pid, signal) within the bound."""
    child = Child("run", {**spec, "ready_after": 5})
    ready = child.event(START_BOUND_S)
    base = {"check": "SIGKILL of a worker", "decoder": spec["decoder"]}
    if ready is None or not ready.get("workers"):
        return {**child.finish(), **base, "ok": False, "why": "no worker process to kill"}
    victim = ready["workers"][0]
    t0 = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    error = child.event(EXIT_BOUND_S)
    named_s = time.monotonic() - t0
    check = {**child.finish(), **base, "worker": victim}
    if error is None or error["event"] != "error":
        return {**check, "ok": False, "why": f"no error within {EXIT_BOUND_S:.0f} s of the kill (a hang)"}
    message = error["message"]
    named = str(victim) in message and "SIGKILL" in message and len(message.splitlines()) == 1
    check.update(named_s=named_s, error=f"{error['type']}: {message}", named=named)
    check["ok"] = check["ok"] and named and check["rc"] == 0
    return check


class Child:
    """A loader in a child process of its own session (its process group is its pid) reporting JSON lines."""

    def __init__(self, mode: str, spec: dict):
        self.shm_before = shm_entries()
        self.shm_seen: set[str] = set()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", CHILD, mode, json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._events: queue.Queue = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read_events, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_events(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                event = json.loads(line[len(MARK) :])
                self.shm_seen.update(event.pop("shm_names", ()))
                self._events.put(event)
        self._events.put(None)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self._stderr = (self._stderr + [line])[-40:]

    def stderr_tail(self) -> str:
        return "".join(self._stderr)[-2000:]

    def event(self, timeout: float) -> dict | None:
        """The child's next report; None when it ended, or said nothing for `timeout` seconds."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def finish(self) -> dict:
        """Wait (within the bound) for the child to exit and its process group to empty; what is left behind. Anything
        of its group still there afterwards is killed, so a failed check leaves no stray process on the machine."""
        t0 = time.monotonic()
        try:
            rc = self.proc.wait(EXIT_BOUND_S)
        except subprocess.TimeoutExpired:
            rc = None
        pgid = self.proc.pid
        left = group_members(pgid)
        while left and time.monotonic() - t0 < EXIT_BOUND_S:
            time.sleep(0.1)
            left = group_members(pgid)
        gone_s = time.monotonic() - t0
        if left or rc is None:
            _kill_group(pgid)
            self.proc.wait()
        named = {n for n in self.shm_seen if not n.endswith(" (deleted)")}
        shm_left = sorted(named & shm_entries())
        return {
            "rc": rc,
            "gone_s": gone_s,
            "processes_left": left,
            "shm_left": shm_left,
            "shm_objects_used": len(self.shm_seen),
            "ok": rc is not None and not left and not shm_left,
        }


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _emit(event: str, **fields) -> None:
    print(MARK + json.dumps({"event": event, **fields}), flush=True)


def child_main(mode: str, spec: dict) -> None:
    """The child's side: "soak" runs the epochs and reports readings, "run" iterates epochs without end, reports
    its workers after `ready_after` batches, and reports the error that stops it."""
    from tagstream.loader import build_loader
    from tagstream.loader.pipeline.graph import worker_processes

    config = bench_config(
        spec["dataset"],
        batch_size=spec["batch_size"],
        image_size=spec["image_size"],
        workers=spec["workers"],
        threads=spec["threads"],
        prefetch=2,
        cpu_decoder=spec["decoder"],
        samples_per_epoch=spec["per_epoch"] * spec["batch_size"],
    )
    me, group = os.getpid(), os.getpgrp()
    loader = build_loader(config)
    n, t0 = 0, time.perf_counter()
    if mode == "soak":
        for epoch in range(spec["epochs"]):
            loader.set_epoch(epoch)
            for _ in loader:
                n += 1
                if n == 1 or n % spec["every"] == 0:
                    _emit("sample", batch=n, epoch=epoch, **group_sample(me, group))
        seconds = time.perf_counter() - t0
        loader.close()
        _emit("closed", batches=n, batch_size=config.batch_size, seconds=seconds, **group_sample(me, group))
        return
    try:
        for epoch in itertools.count():
            loader.set_epoch(epoch)
            for _ in loader:
                n += 1
                if n == spec["ready_after"]:
                    pids = [p.pid for p in worker_processes(loader._pipe)]
                    _emit("ready", batch=n, workers=pids, shm_names=group_sample(me, group)["shm_names"])
    except Exception as exc:  # the report is the point: the type and the whole message, then a normal close
        _emit("error", batch=n, type=type(exc).__name__, message=str(exc))
        loader.close()


def format_soak(r: dict) -> str:
    lines = [
        f"soak: {r['dataset']} ({r['images']} images), batch {r['batch_size']}, {r['workers']} workers, "
        f"{r['image_size']} px, {r['epochs']} epochs x {r['per_epoch']} batches, a reading every {r['every']} "
        f"batches; {r['cores']} cores, load {r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}",
        "slopes per 1,000 batches after the first epoch; PSS shares pages between processes, RSS counts them in each",
    ]
    for decoder, d in r["decoders"].items():
        lines.append(
            f"{decoder}: {d['batches']} batches in {d['seconds']:.0f} s ({d['images_per_s']:.0f} images/s), "
            f"{d['workers']} worker processes"
        )
        for key, unit in (("main_rss_mb", "MB"), ("main_pss_mb", "MB"), ("workers_pss_mb", "MB")):
            v = d[key]
            lines.append(
                f"  {key[:-3]:<14} {v['start']:8.1f} -> {v['end']:8.1f} {unit} (max {v['max']:.1f}), "
                f"slope {v['slope_per_1000']:+.2f} {unit}/1k batches"
            )
        for key in ("main_fds", "workers_fds", "threads", "shm_objects"):
            v = d[key]
            lines.append(
                f"  {key:<14} {v['start']:8.0f} -> {v['end']:8.0f} (max {v['max']:.0f}), "
                f"slope {v['slope_per_1000']:+.2f}/1k batches"
            )
    lines.append("exit paths:")
    for c in r["exits"]:
        detail = f"rc {c['rc']}, {len(c['processes_left'])} processes left, /dev/shm names left {len(c['shm_left'])}"
        if "named_s" in c:
            detail = f"named in {c['named_s']:.1f} s: {c['error']!r}; " + detail
        elif "exit_s" in c:
            detail = f"exited in {c['exit_s']:.1f} s; " + detail
        why = f" ({c['why']})" if "why" in c else ""
        lines.append(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']} ({c['decoder']}){why}: {detail}")
    return "\n".join(lines)


if __name__ == "__main__":
    child_main(sys.argv[1], json.loads(sys.argv[2]))
