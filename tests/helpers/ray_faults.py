"""Faults for the Ray conversion tests, planted in real Ray worker processes.

A test's Ray cluster runs `install` in every worker it starts (runtime_env's worker_process_setup_hook, see
`ray_runtime_env`). It wraps ShardWriter.add: a worker about to write record R of shard S of a part P finds
a request file `P.S.R.kill` (SIGKILL itself) or `P.S.R.fail` (raise OSError, as when a part's input is gone)
in the fault folder; it claims the request by renaming it first, so each fault strikes exactly once.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

FAULTS_ENV = "TAGSTREAM_TEST_FAULTS"
REPO = Path(__file__).resolve().parents[2]


def ray_runtime_env(fault_dir: Path) -> dict:
    # the driver's PYTHONPATH first: workers import the tagstream the driver imports (a worktree's, not the install's)
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(REPO)) if p)
    return {
        "worker_process_setup_hook": "tests.helpers.ray_faults.install",
        "env_vars": {FAULTS_ENV: str(fault_dir), "PYTHONPATH": path},
    }


def request(fault_dir: Path, part: str, shard: int, record: int, kind: str) -> Path:
    """Ask for a fault ('kill' or 'fail') before record `record` of shard `shard` of part `part` (e.g. '00001-of-00003')."""
    path = fault_dir / f"{part}.{shard}.{record}.{kind}"
    path.write_text("")
    return path


def claimed(fault_dir: Path) -> list[str]:
    return sorted(p.name for p in fault_dir.glob("*.claimed"))


def install() -> None:
    from tagstream.loader.data.writer import ShardWriter

    folder = os.environ.get(FAULTS_ENV)
    if not folder:
        return
    real_add = ShardWriter.add

    def add(self, *args, **kwargs):
        stem = Path(folder) / f"{self.root.name}.{self.shard}.{len(self)}"
        for kind in ("kill", "fail"):
            try:
                os.rename(f"{stem}.{kind}", f"{stem}.{kind}.claimed")
            except FileNotFoundError:
                continue
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise OSError(f"injected fault: the input of part {self.root.name} is gone")
        real_add(self, *args, **kwargs)

    ShardWriter.add = add
