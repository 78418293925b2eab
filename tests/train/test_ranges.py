"""Every number of the train config has a range checked before anything starts (issue 25): hostile overrides are
one line naming the key, through the library and the CLI, and nothing is written."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tagstream.tools.cli import main as cli
from tagstream.train.config import load_config

REQUIRED = ["data.dataset=/data/ds", "data.vocab=v1", "run.out_dir=/runs/x"]

HOSTILE = [
    ("data.image_size=100000000000000000000", "data.image_size="),
    ("data.image_size=1e20", "data.image_size"),
    ("data.image_size='224@0,100000@3'", "outside [8, 4096]"),
    ("run.threads=100000", "run.threads=100000 must be a whole number in [1, 1024]"),
    ("data.workers=10000", "data.workers=10000 must be a whole number in [0, 256]"),
    ("data.threads=0", "data.threads=0 must be"),
    ("data.prefetch=1000000", "data.prefetch=1000000 must be"),
    ("data.partitions=0", "data.partitions=0 must be"),
    ("data.samples_per_epoch=100000000000000000000", "data.samples_per_epoch="),
    ("data.cache_limit=100000000000000000000", "data.cache_limit="),
    ("run.seed=-1", "run.seed=-1 must be"),
    ("run.seed=100000000000000000000", "run.seed="),
    ("optim.base_lr=nan", "optim.base_lr=nan must be a finite number"),
    ("optim.base_lr=inf", "optim.base_lr=inf must be a finite number"),
    ("optim.eps=nan", "optim.eps=nan must be a finite number"),
    ("optim.grad_clip=nan", "optim.grad_clip=nan must be a finite number"),
    ("schedule.gamma=nan", "schedule.gamma=nan must be a finite number"),
    ("schedule.warmup_epochs=inf", "schedule.warmup_epochs=inf must be a finite number"),
    ("batch.global_size=100000000000", "batch.global_size="),
    ("run.steps=100000000000000000000", "run.steps="),
    ("run.keep_last=100000000", "run.keep_last="),
]


@pytest.mark.parametrize("override, message", HOSTILE)
def test_hostile_values_are_refused_naming_the_key(override, message):
    with pytest.raises(ValueError) as info:
        load_config("tiny-cpu", [*REQUIRED, override])
    text = str(info.value)
    assert message in text and text.startswith(override.split("=")[0]) and "\n" not in text


@pytest.mark.parametrize(
    "override", ["data.image_size=100000000000000000000", "run.threads=100000", "data.workers=10000"]
)
def test_the_cli_refuses_them_in_one_line_before_writing_anything(tmp_path, override):
    out = tmp_path / "run"
    args = ["train", "--config", "tiny-cpu", "--dataset", str(tmp_path / "ds"), "--vocab", "v", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--set", override])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert override.split("=")[0] in result.output and not out.exists()


def test_base_lr_nan_exits_with_one_line_and_no_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--config", "tiny-cpu", "--dataset", str(tmp_path), "--vocab", "v", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--base-lr", "nan", "--steps", "1"])
    assert result.exit_code == 1 and "optim.base_lr=nan must be a finite number" in result.output
    assert result.output.count("\n") == 1 and not out.exists()


def test_the_bounds_themselves_are_accepted():
    c = load_config(
        "tiny-cpu", [*REQUIRED, "data.workers=256", "run.threads=1024", "data.image_size=4096", "run.seed=0"]
    )
    assert (c.data.workers, c.run.threads, c.data.image_size) == (256, 1024, 4096)
