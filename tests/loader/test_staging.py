"""Exclusive writers (loader/data/staging.py, issue 25): one builder of a name at a time, the second refused in one line;
outputs renamed into place whole; a failed or killed builder leaves the old output and nothing else."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys

import pytest

from tagstream.loader.data.staging import Staged


def _hold(parent, ready, release) -> None:
    with Staged(parent, "v", what="vocabulary", marker="v/done") as tmp:
        (tmp / "done").write_text("first")
        ready.set()
        release.wait(30)


def test_a_second_builder_of_a_name_is_refused_while_the_first_builds(tmp_path):
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    first = ctx.Process(target=_hold, args=(tmp_path, ready, release))
    first.start()
    try:
        assert ready.wait(30)
        with pytest.raises(ValueError, match=rf"vocabulary 'v' is being built by another process \(pid {first.pid}\)"):
            Staged(tmp_path, "v", what="vocabulary", marker="v/done", replace=True)
        assert not (tmp_path / "v").exists()  # nothing visible until the first builder commits
    finally:
        release.set()
        first.join(30)
    assert (tmp_path / "v" / "done").read_text() == "first"
    with pytest.raises(ValueError, match="vocabulary 'v' already exists; choose another name"):
        Staged(tmp_path, "v", what="vocabulary", marker="v/done")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".v.lock", "v"]


def test_a_failed_build_keeps_the_old_output_and_removes_its_folder(tmp_path):
    with Staged(tmp_path, "v", what="vocabulary", marker="v/done") as tmp:
        (tmp / "done").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with Staged(tmp_path, "v", what="vocabulary", marker="v/done", replace=True) as tmp:
            (tmp / "done").write_text("half")
            raise RuntimeError("disk full")
    assert (tmp_path / "v" / "done").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".v.lock", "v"]
    with Staged(tmp_path, "v", what="vocabulary", marker="v/done", replace=True) as tmp:  # the lock was released
        (tmp / "done").write_text("new")
    assert (tmp_path / "v" / "done").read_text() == "new"


def test_files_are_renamed_in_order_into_the_parent(tmp_path):
    with Staged(tmp_path, "m", what="mask", marker="m.npy", outputs=("m.pairs.tsv", "m.npy"), replace=True) as tmp:
        (tmp / "m.pairs.tsv").write_text("pairs")
        (tmp / "m.npy").write_text("mask")
        (tmp / "scratch").write_text("not an output")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m.npy", "m.pairs.tsv"]


def test_a_killed_builder_releases_the_name_and_its_folder_is_cleared(tmp_path):
    code = (
        "import sys, time\nfrom tagstream.loader.data.staging import Staged\n"
        f"s = Staged({str(tmp_path)!r}, 'v', what='vocabulary', marker='v/done')\n"
        "tmp = s.__enter__()\n(tmp / 'done').write_text('half')\nprint('held', flush=True)\ntime.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match="is being built by another process"):
            Staged(tmp_path, "v", what="vocabulary", marker="v/done")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # what the killed builder left
    with Staged(tmp_path, "v", what="vocabulary", marker="v/done") as tmp:
        (tmp / "done").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".v.lock", "v"]
    assert (tmp_path / "v" / "done").read_text() == "whole"
