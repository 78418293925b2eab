"""`tagstream train` end to end on the real loader and the learnable synthetic world: loss falls through the
CLI, a SIGKILLed run resumes to the identical losses, two ranks under torchrun (gloo), user errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tagstream.tools.cli import main as cli
from tagstream.train.rundir import step_losses as _losses
from tests.helpers.worlds import converted_world

STEPS = 24
COMMON = [
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
    "run.checkpoint_every=6",
    "--set",
    "run.threads=1",
    "--set",
    "run.progress=false",
    "--set",
    "run.log_every=3",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A 300-image synthetic hashtag world, converted, with a vocabulary of its tags seen at least 10 times."""
    return converted_world(tmp_path_factory.mktemp("train_world"), images=300, seed=0, shard_size=100, min_count=10)


def _args(world: Path, out: Path, *extra: str) -> list[str]:
    return ["train", *COMMON, "--dataset", str(world), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """One uninterrupted run through the CLI (in-process): (output, run directory)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    result = CliRunner().invoke(cli, _args(world, out))
    assert result.exit_code == 0, result.output
    return result.output, out


def _records(out: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_tiny_model_learns_through_the_cli(reference):
    output, out = reference
    assert "images/s" in output and "data-wait" in output and "eval mAP" in output
    losses = _losses(out)
    assert sorted(losses) == list(range(1, STEPS + 1))
    first = sum(losses[s] for s in range(1, 7)) / 6
    last = sum(losses[s] for s in range(STEPS - 5, STEPS + 1)) / 6
    assert last < first - 0.15, (first, last)
    (summary,) = _records(out, "summary")
    assert summary["steps_run"] == STEPS and 0 <= summary["data_wait"] <= 1 and summary["images_per_s"] > 0
    assert summary["eval"]["images"] > 0 and 0 <= summary["eval"]["mAP"] <= 1


def test_sigkilled_run_resumes_to_identical_losses(world, reference, tmp_path):
    _, ref = reference
    out = tmp_path / "run"
    # its own session, so the kill takes the DALI worker processes down with it
    proc = subprocess.Popen(
        [sys.executable, "-m", "tagstream.tools.cli", *_args(world, out)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    try:
        while not (out / "step-000000006.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not _records(out, "summary"), "the run finished before it was killed"
    result = CliRunner().invoke(cli, _args(world, out, "--resume"))
    assert result.exit_code == 0, result.output
    starts = _records(out, "start")
    assert len(starts) == 2 and starts[1]["step"] >= 6 and starts[1]["resumed_from"]
    assert _losses(out) == _losses(ref)  # every step, bit for bit
    (summary,) = _records(out, "summary")
    assert summary["eval"] == _records(ref, "summary")[0]["eval"]
    again = CliRunner().invoke(cli, _args(world, out, "--resume"))
    assert again.exit_code == 0 and "already at step 24: nothing to train" in again.output


def test_ctrl_c_ends_a_run_with_one_line_and_it_resumes(world, reference, tmp_path):
    """SIGINT to the run's process group (a terminal's Ctrl-C): the trainer stops, its loader workers do not
    print tracebacks of their own, and the last checkpoint resumes."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tagstream.tools.cli", *_args(world, out)],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    try:
        while not (out / "step-000000006.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)
        output = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1 and "Traceback" not in output and output.rstrip().endswith("Aborted!"), output[-2000:]
    result = CliRunner().invoke(cli, _args(world, out, "--resume"))
    assert result.exit_code == 0 and _losses(out) == _losses(reference[1]), result.output


def test_two_ranks_under_torchrun_with_gloo_and_accumulation(world, reference, tmp_path):
    _, ref = reference
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "tagstream.tools.cli",
        *_args(world, out, "--steps", "4", "--grad-accum", "2", "--set", "run.checkpoint_every=2"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("checkpoint:") == 1  # only rank 0 reports
    (start,) = _records(out, "start")
    assert start["world"] == 2 and start["per_rank_batch"] == 8  # 32 = 2 ranks x 2 micro-batches x 8
    assert sorted(_losses(out)) == [1, 2, 3, 4]
    (summary,) = _records(out, "summary")
    # the held-out split is scored once over both ranks' shares
    assert summary["eval"]["images"] == _records(ref, "summary")[0]["eval"]["images"]
    from tagstream.train.checkpoint import latest_checkpoint, load_checkpoint

    state = load_checkpoint(latest_checkpoint(out))
    assert state["world"] == 2 and state["loader"]["world"] == 2 and state["step"] == 4


def test_user_errors_get_clear_messages(world, reference, tmp_path):
    _, ref = reference
    runner = CliRunner()
    cases = [
        (_args(world, tmp_path / "a", "--vocab", "nope"), "no vocabulary 'nope' (vocabularies here: v1"),
        (_args(tmp_path / "missing", tmp_path / "b"), "missing"),
        (_args(world, ref, "--base-lr", "0.3"), "holds another run (its config.json differs in optim.base_lr)"),
        (
            _args(world, ref, "--model", "resnet18", "--resume"),
            "was trained with another config (model.name: 'regnet_y_tiny' -> 'resnet18')",
        ),
        (_args(world, tmp_path / "c", "--set", "run.stepz=3"), "unknown key(s) ['run.stepz']"),
        (_args(world, tmp_path / "d", "--resume", str(tmp_path / "x.pt")), "no such checkpoint"),
        (_args(world, tmp_path / "f", "--mask", "dedup-eval"), "no mask 'dedup-eval'"),
        (
            _args(world, tmp_path / "g", "--set", "data.one_pass=true"),
            "data.one_pass=True needs data.sampling='natural', got 'sqrt'",
        ),
    ]
    for args, message in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
    result = runner.invoke(cli, _args(world, tmp_path / "e" / "run"), env={"WORLD_SIZE": "3", "RANK": "0"})
    assert result.exit_code == 1 and "batch.global_size=32 is not divisible by world size 3" in result.output
    assert not any(tmp_path.iterdir())  # no refused run left a run directory (nor the folder above one)
    assert (ref / ".lock").exists() and (ref / "config.json").exists()  # a refused run leaves another's alone


def test_a_missing_vocab_names_the_option_and_the_command(world, tmp_path):
    args = [a for a in _args(world, tmp_path / "run") if a not in ("--vocab", "v1")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and not (tmp_path / "run").exists()
    assert result.output.strip().splitlines() == [
        "Error: data.vocab is required: give --vocab NAME; build one with `tagstream vocab DATASET --name NAME` "
        "(or set it in the recipe, or --set data.vocab=...)"
    ]


def test_one_pass_epochs_through_the_cli(world, tmp_path):
    """--set data.one_pass=true: an epoch is ceil(train images / global batch) steps, and the checkpoint's loader
    state says so (the exactly-once guarantee itself is tested at the loader, tests/loader/test_one_pass.py)."""
    import numpy as np

    from tagstream.loader import Dataset, Vocab
    from tagstream.loader.sampling import eligibility
    from tagstream.train.checkpoint import latest_checkpoint, load_checkpoint
    from tagstream.train.config import load_config

    out = tmp_path / "run"
    extra = ["--sampling", "natural", "--set", "data.one_pass=true", "--steps", "10"]
    result = CliRunner().invoke(cli, _args(world, out, *extra))
    assert result.exit_code == 0, result.output
    state = load_checkpoint(latest_checkpoint(out))
    recipe = load_config("tiny-cpu", [f'data.dataset="{world}"', 'data.vocab="v1"', 'run.out_dir="o"']).data
    dataset = Dataset(world)
    train = eligibility(dataset, holdout_fraction=recipe.holdout_fraction, split="train")
    drawable = train & (np.diff(Vocab(dataset, "v1").label_offsets) > 0)  # held-in images with a class
    assert state["loader"]["one_pass"] is True and state["step"] == 10
    assert state["loader"]["batches"] == -(-int(drawable.sum()) // 32)

    from tagstream.tools.cli.train import OPTION_KEYS, _toml
    from tagstream.train.config import load_config

    required = ['data.dataset="ds"', 'data.vocab="v1"', 'run.out_dir="out"']
    config = load_config("tiny-cpu", [*required, f"{OPTION_KEYS['mask']}={_toml(('a', 'b'))}"])
    assert config.data.masks == ("a", "b")


def test_help_says_what_and_shows_examples():
    result = CliRunner().invoke(cli, ["train", "--help"])
    assert result.exit_code == 0
    assert "Pretrain a model on hashtags" in result.output and "torchrun --standalone" in result.output
