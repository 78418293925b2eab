"""Elastic resume through `tagstream train`: a run started on 2 ranks under torchrun (gloo, CPU) resumes on 1
process from its checkpoint and finishes; a world size that does not divide the run's partitions is refused
with the world sizes that work. (That the global batches are the same is tested at the loader,
tests/loader/test_elastic.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tagstream.tools.cli import main as cli
from tests.helpers.worlds import converted_world

ARGS = [
    "--config",
    "tiny-cpu",
    "--vocab",
    "v1",
    "--image-size",
    "32",
    "--batch-size",
    "16",
    "--set",
    "run.threads=1",
    "--set",
    "run.progress=false",
    "--set",
    "run.log_every=1",
    "--set",
    "data.holdout_fraction=0.0",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A 160-image synthetic hashtag world, converted, with a vocabulary."""
    return converted_world(
        tmp_path_factory.mktemp("elastic_world"), images=160, seed=1, shard_size=50, min_count=5, stoplist=False
    )


def _records(out: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_ranks_then_resume_on_one(dataset, tmp_path):
    from tagstream.train.checkpoint import latest_checkpoint, load_checkpoint

    out = tmp_path / "run"
    common = [*ARGS, "--dataset", str(dataset), "--out", str(out)]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "tagstream.tools.cli",
        "train",
        *common,
        "--steps",
        "2",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    first = load_checkpoint(latest_checkpoint(out))
    assert first["world"] == 2 and first["loader"]["partitions"] == 2 and first["loader"]["global_batch"] == 16
    assert (first["loader"]["epoch"], first["loader"]["step"]) != (0, 0)

    # 3 ranks do not divide 2 partitions: refused before anything is built, naming the world sizes that work
    refused = CliRunner().invoke(
        cli, ["train", *common, "--steps", "4", "--resume"], env={"WORLD_SIZE": "3", "RANK": "0"}
    )
    assert (
        refused.exit_code == 1
        and "has data.partitions=2: it runs on world sizes 1, 2, not on 3 ranks" in refused.output
    )

    resumed = subprocess.run(
        [sys.executable, "-m", "tagstream.tools.cli", "train", *common, "--steps", "4", "--resume"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    starts = _records(out, "start")
    assert [s["world"] for s in starts] == [2, 1] and starts[1]["step"] == 2 and starts[1]["per_rank_batch"] == 16
    last = load_checkpoint(latest_checkpoint(out))
    assert last["step"] == 4 and last["world"] == 1
    assert last["loader"]["partitions"] == 2 and last["loader"]["world"] == 1 and last["loader"]["global_batch"] == 16
    steps_per_epoch = last["loader"]["batches"]
    at = lambda s: divmod(s, steps_per_epoch)  # noqa: E731  (epoch, step) after s steps, grad_accum 1
    assert (last["loader"]["epoch"], last["loader"]["step"]) in (at(4), (at(4)[0] - 1, steps_per_epoch))
