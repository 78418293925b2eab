"""Damaged and contended run directories (issue 19's train side): a locked run directory, checksummed checkpoints,
resume refusals naming each change, malformed checkpoints, and the fall-back to an older intact checkpoint."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from tagstream.tools.cli import main as cli
from tagstream.train import checkpoint as ckpt
from tagstream.train.checkpoint import list_checkpoints, load_checkpoint
from tagstream.train.loop import main
from tagstream.train.rundir import RunLock
from tests.helpers.train_fakes import fake_factory, fake_run_config


def _flip_weight_bytes(path, count: int = 64) -> None:
    """Flip `count` bytes in the middle of the largest tensor's storage inside the checkpoint file."""
    state = torch.load(path, weights_only=True)
    name, tensor = max(state["model"].items(), key=lambda kv: kv[1].numel())
    needle = tensor.contiguous().view(torch.uint8).numpy().tobytes()[:32]
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at > 0, f"tensor {name} not found in the file"
    for i in range(at + 32, at + 32 + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _hold_lock(out, ready, release) -> None:
    with RunLock(out):
        ready.set()
        release.wait(30)


def test_a_second_run_into_a_locked_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(out, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(ValueError, match=rf"{out} is in use by another run \(pid {holder.pid}\)"):
            main(fake_run_config(out, "run.steps=2"), loader_factory=fake_factory)
        assert not (out / "config.json").exists()  # nothing of the second run was written
    finally:
        release.set()
        holder.join(30)
    main(fake_run_config(out, "run.steps=2"), loader_factory=fake_factory)  # free again once the holder ended
    assert [p.name for p in list_checkpoints(out)] == ["step-000000002.pt"]


def test_a_killed_run_does_not_leave_its_lock_held(tmp_path):
    out = tmp_path / "run"
    code = f"from tagstream.train.rundir import RunLock\nimport time\nwith RunLock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match="in use by another run"):
            RunLock(out).__enter__()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    with RunLock(out):
        assert (out / ".lock").read_text() == str(os.getpid())


def test_a_flipped_weight_is_refused_and_resume_falls_back_to_the_older_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    main(fake_run_config(out, "run.steps=4", "run.checkpoint_every=2"), loader_factory=fake_factory)
    latest = list_checkpoints(out)[-1]
    assert latest.name == "step-000000004.pt"
    _flip_weight_bytes(latest)
    with pytest.raises(ValueError, match=rf"{latest}: checkpoint content does not match its checksum"):
        load_checkpoint(latest)
    with pytest.raises(ValueError, match="does not match its checksum"):  # named explicitly: no fall-back
        main(fake_run_config(out, "run.steps=6"), resume=str(latest), loader_factory=fake_factory)
    summary = main(fake_run_config(out, "run.steps=6"), resume="auto", loader_factory=fake_factory)
    err = capsys.readouterr().err
    assert "step-000000004.pt: checkpoint content does not match its checksum" in err
    assert "falling back to step-000000002.pt" in err
    assert summary["steps_run"] == 4  # steps 3..6 from the step-2 checkpoint


def test_resume_with_every_checkpoint_damaged_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    main(fake_run_config(out, "run.steps=2"), loader_factory=fake_factory)
    only = list_checkpoints(out)[0]
    only.write_bytes(only.read_bytes()[: only.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"no intact checkpoint to resume from \(1 damaged\)"):
        main(fake_run_config(out, "run.steps=4"), resume="auto", loader_factory=fake_factory)


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.dataset=other", "data.dataset: 'fake' -> 'other'"),
        ("data.sampling=natural", "data.sampling: 'sqrt' -> 'natural'"),
        ("data.masks=['no-eval']", "data.masks: [] -> ['no-eval']"),
        ("optim.base_lr=40.0", "optim.base_lr: 0.4 -> 40.0"),
    ],
)
def test_resume_refuses_a_changed_setting_naming_it(tmp_path, override, key):
    out = tmp_path / "run"
    main(fake_run_config(out, "run.steps=2"), loader_factory=fake_factory)
    before = (out / "config.json").read_text()
    with pytest.raises(ValueError, match="was trained with another config") as info:
        main(fake_run_config(out, "run.steps=4", override), resume="auto", loader_factory=fake_factory)
    assert key in str(info.value) and "--resume-anyway" in str(info.value)
    assert (out / "config.json").read_text() == before  # the run directory is left as it was


def test_resume_may_lengthen_the_run_and_accept_a_named_change(tmp_path):
    out = tmp_path / "run"
    main(
        fake_run_config(out, "run.steps=2", "schedule.kind=constant", "schedule.warmup_steps=0"),
        loader_factory=fake_factory,
    )
    main(
        fake_run_config(out, "run.steps=3", "schedule.kind=constant", "schedule.warmup_steps=0"),
        resume="auto",
        loader_factory=fake_factory,
    )  # run.steps may change
    with pytest.raises(ValueError, match="not a config key"):
        main(
            fake_run_config(
                out, "run.steps=4", "schedule.kind=constant", "schedule.warmup_steps=0", "optim.base_lr=0.2"
            ),
            resume="auto",
            resume_anyway=["optim.lr"],
            loader_factory=fake_factory,
        )
    main(
        fake_run_config(out, "run.steps=4", "schedule.kind=constant", "schedule.warmup_steps=0", "optim.base_lr=0.2"),
        resume="auto",
        resume_anyway=["optim.base_lr"],
        loader_factory=fake_factory,
    )
    lrs = [r["lr"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]
    assert lrs[-1] == pytest.approx(0.2 * 16 / 256)  # the accepted LR governs, not the checkpoint's
    assert json.loads((out / "config.json").read_text())["optim"]["base_lr"] == 0.2


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s.pop("optimizer"), "checkpoint lacks optimizer"),
        (lambda s: s["model"].update({next(iter(s["model"])): torch.zeros(3, 3)}), "checkpoint does not fit this run"),
        (lambda s: s.update(config=[1, 2]), "entry config is list, not a table of sections"),
        (lambda s: s.update(optimizer="x"), "entry optimizer is 'x', not a table"),
        (lambda s: s.update(step=-5), "entry step is -5, not a whole number >= 0"),
        (lambda s: s["loader"].update(epoch=-3), "entry loader.epoch is -3, not a whole number >= 0"),
        (lambda s: s["rng"].update(torch="seed"), "entry rng.torch is 'seed', not a uint8 tensor"),
        (lambda s: s.update(world=0), r"entry world is 0, not a whole number in \[1, 1048576\]"),
    ],
)
def test_malformed_checkpoints_are_one_line_errors(tmp_path, damage, message):
    out = tmp_path / "run"
    main(fake_run_config(out, "run.steps=2"), loader_factory=fake_factory)
    path = list_checkpoints(out)[0]
    state = torch.load(path, weights_only=True)
    damage(state)
    state["checksum"] = ckpt.state_digest(state)  # well-formed on disk, wrong inside
    torch.save(state, path)
    with pytest.raises(ValueError, match=message) as info:
        main(fake_run_config(out, "run.steps=4"), resume=str(path), loader_factory=fake_factory)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert [p.name for p in list_checkpoints(out)] == ["step-000000002.pt"]  # nothing resumed, nothing written


def test_cli_resume_anyway_and_refusal_are_one_line(tmp_path, tiny_dataset):
    ds = tiny_dataset(16, shard_size=8)
    from tagstream.tools.vocab import VocabOptions, build_vocab

    build_vocab(ds, "v", VocabOptions(min_count=1))
    out = tmp_path / "run"
    base = [
        "train",
        "--config",
        "tiny-cpu",
        "--dataset",
        str(ds),
        "--vocab",
        "v",
        "--out",
        str(out),
        "--image-size",
        "16",
        "--batch-size",
        "8",
        "--set",
        "run.progress=false",
        "--set",
        "data.workers=0",
        "--set",
        "run.threads=1",
    ]
    runner = CliRunner()
    res = runner.invoke(cli, [*base, "--steps", "1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, [*base, "--steps", "2", "--sampling", "natural", "--resume"])
    assert res.exit_code == 1 and "data.sampling: 'sqrt' -> 'natural'" in res.output
    assert res.output.strip().count("\n") == 0
    res = runner.invoke(
        cli, [*base, "--steps", "2", "--sampling", "natural", "--resume", "--resume-anyway", "data.sampling"]
    )
    assert res.exit_code == 0, res.output
    with RunLock(out):  # the CLI returned with the run directory's lock released
        assert (out / ".lock").read_text() == str(os.getpid())


@pytest.mark.parametrize("override", ["data.vocab=../../x", "data.masks=['../x']", "data.vocab='v\\n'"])
def test_names_that_are_paths_are_refused_before_a_run_directory_exists(tmp_path, override):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="is not allowed"):
        main(fake_run_config(out, "run.steps=2", override), loader_factory=fake_factory)
    assert not out.exists()


def test_a_checkpoint_of_an_earlier_version_without_the_newer_config_keys_resumes(tmp_path):
    """Keys added to the config since a checkpoint was written count as their defaults (the behaviour before
    they existed), not as changes; a real change is still refused."""
    out = tmp_path / "run"
    main(fake_run_config(out, "run.steps=2"), loader_factory=fake_factory)
    path = list_checkpoints(out)[0]
    state = torch.load(path, weights_only=True)
    for section, key in (
        ("model", "label_smoothing"),
        ("optim", "name"),
        ("optim", "grad_clip"),
        ("data", "partitions"),
    ):
        del state["config"][section][key]
    state["checksum"] = ckpt.state_digest(state)
    torch.save(state, path)
    summary = main(fake_run_config(out, "run.steps=3"), resume="auto", loader_factory=fake_factory)
    assert summary["steps_run"] == 1
    with pytest.raises(ValueError, match=r"model.label_smoothing: 0.0 -> 0.1"):
        main(
            fake_run_config(out, "run.steps=4", "model.label_smoothing=0.1"),
            resume=str(path),
            loader_factory=fake_factory,
        )


def test_resume_accepts_the_same_dataset_spelled_differently(tmp_path, monkeypatch):
    from tagstream.train.resume import check_resume, same_place

    (tmp_path / "ds").mkdir()
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    config = fake_run_config(tmp_path / "run", f"data.dataset={tmp_path}/ds")
    for spelling in ("ds", "./ds/", f"{tmp_path}/other/../ds"):
        check_resume(fake_run_config(tmp_path / "run", f"data.dataset={spelling}").to_dict(), config, path="c.pt")
    with pytest.raises(ValueError, match="data.dataset: 'other'"):
        check_resume(fake_run_config(tmp_path / "run", "data.dataset=other").to_dict(), config, path="c.pt")
    assert same_place("s3://b/ds/", "s3://b/ds") and not same_place("s3://b/ds", "s3://b/ds2")


def test_an_out_dir_that_is_a_file_and_a_resume_with_nothing_to_resume(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        main(fake_run_config(tmp_path / "afile", "run.steps=1"), loader_factory=fake_factory)
    summary = main(fake_run_config(tmp_path / "new", "run.steps=1"), resume="auto", loader_factory=fake_factory)
    assert summary["step"] == 1 and "no checkpoint in" in capsys.readouterr().err


def test_verify_shards_reaches_the_loader_and_may_change_on_resume(tmp_path):
    from tagstream.train.loading import loader_config
    from tagstream.train.resume import check_resume

    on = fake_run_config(tmp_path / "run", "data.verify_shards=true")
    assert loader_config(on, mode="train", batch_size=8, device="cpu", device_id=0).verify_shards
    check_resume(fake_run_config(tmp_path / "run").to_dict(), on, path="c.pt")  # turning it on is not a change of run
