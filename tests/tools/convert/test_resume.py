"""Crash safety: a conversion killed (SIGKILL) at any commit point resumes to the identical dataset."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.writer import ShardWriter
from tagstream.tools.convert.engine import convert
from tests.helpers.tiny import TinyDatasets

SHARD_SIZE = 3


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """10 good images with a bad metadata line and a missing file in the middle and at the end."""
    src = TinyDatasets(tmp_path_factory).source(10)
    lines = src.read_text().splitlines()
    lines.insert(4, "{broken")
    lines.insert(8, json.dumps({"image": "images/gone.jpg", "tags": ["x"]}))
    lines.append(json.dumps({"image": "images/gone2.jpg", "tags": ["y"]}))
    src.write_text("\n".join(lines) + "\n")
    return src


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ds"
    convert(source, out, shard_size=SHARD_SIZE)
    return out


def dataset_files(root: Path) -> dict[str, bytes]:
    """Everything a reader sees: manifest, tables, index arrays, shard data."""
    files = {}
    for rel in (fmt.MANIFEST, fmt.TAGS, fmt.REJECTS):
        files[rel] = (root / rel).read_bytes()
    for p in sorted((root / fmt.INDEX_DIR).iterdir()):
        files[f"index/{p.name}"] = p.read_bytes()
    for p in sorted((root / fmt.SHARDS_DIR).iterdir()):
        files[f"shards/{p.name}"] = (
            sorted(q.name for q in p.iterdir()).__repr__().encode() + (p / "data.mdb").read_bytes()
        )
    return files


def _child(source: str, out: str, replace_at: int | None, record_at: int | None) -> None:
    """Run a conversion that SIGKILLs itself before its replace_at-th rename or record_at-th record."""
    renames, records = [0], [0]
    real_replace, real_add = os.replace, ShardWriter.add

    def replace(a, b):
        if renames[0] == replace_at:
            os.kill(os.getpid(), signal.SIGKILL)
        renames[0] += 1
        real_replace(a, b)

    def add(self, *args, **kwargs):
        if records[0] == record_at:
            os.kill(os.getpid(), signal.SIGKILL)
        records[0] += 1
        real_add(self, *args, **kwargs)

    os.replace = replace
    ShardWriter.add = add
    convert(source, out, shard_size=SHARD_SIZE)
    os._exit(0)  # not killed: the parent sees exit code 0 and fails the test


def run_killed(source: Path, out: Path, *, replace_at: int | None = None, record_at: int | None = None) -> None:
    proc = mp.get_context("fork").Process(target=_child, args=(str(source), str(out), replace_at, record_at))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL, f"conversion was not killed (exit code {proc.exitcode})"


def count_renames(source: Path, out: Path) -> int:
    calls = [0]
    real = os.replace

    def counting(a, b):
        calls[0] += 1
        real(a, b)

    os.replace = counting
    try:
        convert(source, out, shard_size=SHARD_SIZE)
    finally:
        os.replace = real
    return calls[0]


def test_kill_before_every_rename_resumes_identically(source, reference, tmp_path):
    total = count_renames(source, tmp_path / "count")
    assert total == 1 + 4 * 9 + 3  # state, 4 shards x (7 index arrays, rename, state), tags, rejects, manifest
    expected = dataset_files(reference)
    for at in range(total):
        out = tmp_path / f"k{at}"
        run_killed(source, out, replace_at=at)
        with pytest.raises(fmt.FormatError, match="no manifest.json"):
            Dataset(out)  # a killed run never leaves a dataset that looks whole
        summary = convert(source, out, shard_size=SHARD_SIZE)
        assert not summary.already_complete
        assert dataset_files(out) == expected, f"killed before rename {at}"


@pytest.mark.parametrize(("records", "workers"), [([0], 1), ([4], 1), ([2, 7], 2), ([1, 5, 6], 1)])
def test_kill_while_writing_records_repeatedly(source, reference, tmp_path, records, workers):
    out = tmp_path / "ds"
    for at in records:  # each rerun is killed again further on, then one finishes
        run_killed(source, out, record_at=at)
    summary = convert(source, out, shard_size=SHARD_SIZE, workers=workers)
    assert dataset_files(out) == dataset_files(reference)
    assert summary.images == 10 and summary.rejected == {"bad_metadata": 1, "missing_file": 2}


def test_resume_redoes_a_damaged_committed_shard(source, reference, tmp_path):
    out = tmp_path / "ds"
    run_killed(source, out, record_at=8)  # shards 0 and 1 committed
    data = fmt.shard_path(out, "00001") / "data.mdb"
    data.write_bytes(data.read_bytes()[:-4096])  # truncated behind our back
    summary = convert(source, out, shard_size=SHARD_SIZE)
    assert summary.resumed_from == 3  # shard 0 kept (inputs 0..2), shard 1 redone
    assert dataset_files(out) == dataset_files(reference)


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ..., starttime at 19), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> dict[int, str]:
    """Live descendants of a process, from /proc (Linux): pid -> its start time (a pid can be reused)."""
    stats = {int(p.name): _stat(p.name) for p in Path("/proc").glob("[0-9]*")}
    parent = {p: int(f[1]) for p, f in stats.items() if f is not None}
    found, frontier = {}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found.update((c, stats[c][19]) for c in kids)
        frontier += kids
    return found


def _running(pid: int, started: str) -> bool:
    """The same process (not a reused pid) and not a zombie waiting to be reaped: it has not exited."""
    fields = _stat(pid)
    return fields is not None and fields[19] == started and fields[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
def test_cli_killed_at_a_random_moment_resumes(tmp_path, tiny_dataset):
    src = tiny_dataset.source(40)
    exe = Path(sys.executable).with_name("tagstream")
    args = [str(exe), "convert", str(src), str(tmp_path / "ds"), "--shard-size", "5", "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # start-up (imports, worker pool) takes about a second; kill somewhere in the conversion
    while not (tmp_path / "ds" / ".convert" / "00001.json").exists() and proc.poll() is None:
        time.sleep(0.01)
    helpers = descendants(proc.pid)  # the forkserver and the decoding workers
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL  # killed mid-way: 6 of 8 shards were still to come
    assert not (tmp_path / "ds" / fmt.MANIFEST).exists()
    assert len(helpers) >= 3
    deadline = time.monotonic() + 20
    while any(_running(p, t) for p, t in helpers.items()) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphans = [p for p, t in helpers.items() if _running(p, t)]
    for p in orphans:  # never leave them behind, even when failing
        os.kill(p, signal.SIGKILL)
    assert not orphans, "worker processes outlived a killed convert"
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    convert(src, tmp_path / "ref", shard_size=5)
    assert dataset_files(tmp_path / "ds") == dataset_files(tmp_path / "ref")


def test_a_conversion_by_an_earlier_tagstream_is_refused_saying_what_to_do(source, tmp_path):
    """state.json written before the fingerprint covered image stamps (a bare digest): a rerun cannot tell whether
    the source changed, and says so, instead of claiming the source changed."""
    from tagstream.tools.convert.engine import ConvertRefused

    out = tmp_path / "ds"
    convert(source, out, shard_size=SHARD_SIZE)
    state_file = out / ".convert" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["fingerprint"].startswith("2:")
    state["fingerprint"] = state["fingerprint"].split(":", 1)[1]
    state_file.write_text(json.dumps(state))
    with pytest.raises(
        ConvertRefused,
        match=r"converted by an earlier tagstream.*usable as it is, and to convert again use another OUT",
    ):
        convert(source, out, shard_size=SHARD_SIZE)
    assert Dataset(out).num_images == 10
