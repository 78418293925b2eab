"""The acceptance run of a dataset on object storage: `tagstream train` under torchrun (2 ranks, gloo, CPU) on
s3:// served by moto on 127.0.0.1 behind the fault proxy. Each shard is downloaded once (server-side GET
counts) by a rank that samples from it, a dropped connection is survived, the losses equal a run from
local disk, and a SIGKILLed run resumes from its cache without downloading a shard again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.prefetch import shards_of_ranges
from tagstream.loader.data.push import push
from tagstream.loader.data.vocab import Vocab
from tagstream.loader.sampling.sampler import RankSampler
from tagstream.train.rundir import step_losses as _losses
from tests.helpers.s3server import _moto_server, s3_server  # noqa: F401 - fixtures
from tests.helpers.worlds import converted_world

pytestmark = pytest.mark.slow
URL = "s3://bkt/world"
STEPS = 16
ARGS = [
    "train",
    "--config",
    "tiny-cpu",
    "--vocab",
    "v1",
    "--image-size",
    "32",
    "--batch-size",
    "32",
    "--steps",
    str(STEPS),
    "--set",
    "run.checkpoint_every=2",
    "--set",
    "run.keep_last=20",
    "--set",
    "run.threads=1",
    "--set",
    "run.progress=false",
    "--set",
    "run.log_every=1",
    "--set",
    "data.holdout_fraction=0.0",
]
TIMEOUT = 400


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """300 synthetic hashtag images in 6 shards of 50, vocabulary v1."""
    return converted_world(tmp_path_factory.mktemp("remote_world"), images=300, seed=0, shard_size=50, min_count=10)


def _torchrun(dataset: str, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "tagstream.tools.cli",
        *ARGS,
        "--dataset",
        dataset,
        "--out",
        str(out),
        *extra,
    ]


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (read from /proc), as a preemption would."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _owners(world: Path) -> dict[str, set[int]]:
    """shard name -> the ranks (of 2) that sample from it, by the sampler's own ownership."""
    ds = Dataset(world)
    owners: dict[str, set[int]] = {n: set() for n in ds.shard_names}
    for rank in (0, 1):
        sampler = RankSampler(ds, Vocab(ds, "v1"), sampling="sqrt", rank=rank, world=2, seed=0)
        for k in shards_of_ranges(ds.shard_starts, sampler.owned_ranges()):
            owners[ds.shard_names[k]].add(rank)
    return owners


def test_two_ranks_train_from_s3_like_from_disk_and_resume_from_the_cache(world, s3_server, tmp_path):  # noqa: F811
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the server's endpoint and dummy keys are in os.environ
    local = subprocess.run(
        _torchrun(str(world), tmp_path / "local"), capture_output=True, text=True, timeout=TIMEOUT, env=env
    )
    assert local.returncode == 0, local.stderr[-3000:]

    s3_server.create_bucket("bkt")
    push(world, URL)
    s3_server.proxy.reset_counts()
    s3_server.proxy.inject("/bkt/world/shards/*/data.mdb", "drop", times=1)  # one shard's body cut mid-way
    cache, out = tmp_path / "cache", tmp_path / "remote"
    cmd = _torchrun(URL, out, "--set", f'data.cache_dir="{cache}"')
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT
    try:  # kill once a checkpoint exists and every shard is cached (a kill mid-download would refetch one)
        while not (list(out.glob("step-*.pt")) and len(list(cache.glob("*/shards/*.lmdb/verified.json"))) == 6):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within the timeout"
            time.sleep(0.05)
    finally:
        _kill_tree(proc.pid)  # torchrun starts each rank in a session of its own: killpg would miss them
        proc.wait()
    assert '"kind": "summary"' not in (out / "metrics.jsonl").read_text(), "the run finished before it was killed"
    gets = s3_server.proxy.counts("GET", "/bkt/world/shards/*/data.mdb")
    assert sum(n for (kind, _), n in s3_server.proxy.faulted.items() if kind == "drop") == 1

    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "data-wait" in resumed.stdout

    assert _losses(out) == _losses(tmp_path / "local")  # every step, bit for bit
    assert sorted(_losses(out)) == list(range(1, STEPS + 1))
    # each shard downloaded once (plus the one retried after the drop), never again on resume
    assert s3_server.proxy.counts("GET", "/bkt/world/shards/*/data.mdb") == gets
    assert sorted(gets.values()) == [1, 1, 1, 1, 1, 2]
    owners = _owners(world)
    for marker in cache.glob("*/shards/*.lmdb/verified.json"):
        by = int(json.loads(marker.read_text())["by"]["rank"])
        assert by in owners[marker.parent.name[: -len(".lmdb")]], (marker, by, owners)
