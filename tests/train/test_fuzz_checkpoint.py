"""Fault injection into checkpoints (issue 25): a checkpoint cut, flipped or padded on disk, and one whose content
was replaced by hostile values and whose checksum was recomputed to match, fed to load_checkpoint and to a resumed
run: each loads and resumes, or is refused in one line naming the file; never a traceback, a signal or a hang."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tagstream.loader.data.format import FormatError
from tagstream.train import checkpoint as ckpt
from tagstream.train.loop import main
from tests.helpers.fuzz import HOSTILE_VALUES, byte_mutation, fuzz_settings, mutate_bytes, one_line_or_refusal
from tests.helpers.train_fakes import fake_factory, fake_run_config

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz_ckpt") / "run"
    main(fake_run_config(out, "run.steps=2"), loader_factory=fake_factory)
    return out


def _copy(run_dir: Path) -> tuple[Path, Path]:
    out = Path(shutil.copytree(run_dir, Path(tempfile.mkdtemp(dir=run_dir.parent)) / "run"))
    return out, ckpt.list_checkpoints(out)[-1]


def _paths(state: dict) -> list[tuple]:
    """Entries a content mutation may replace: every top-level entry, and the entries inside the tables."""
    found = []
    for key, value in state.items():
        if key in ("checksum", "format", "version"):
            continue
        found.append((key,))
        if isinstance(value, dict):
            found += [(key, k) for k in list(value)[:6]]
            if key == "config":
                found += [(key, s, k) for s in value for k in list(value[s])[:4]]
    return found


def _resume(out: Path, path: Path) -> None:
    main(fake_run_config(out, "run.steps=3"), resume=str(path), loader_factory=fake_factory)


@fuzz_settings(examples=20)
@given(mutation=byte_mutation())
def test_a_checkpoint_damaged_on_disk(run_dir, mutation):
    out, path = _copy(run_dir)
    mutate_bytes(path, mutation)
    state = one_line_or_refusal(lambda: ckpt.load_checkpoint(path), (ValueError,))
    if isinstance(state, ValueError):
        assert str(path) in str(state)


@fuzz_settings(examples=30)
@given(where=st.floats(0, 1, exclude_max=True), value=st.sampled_from(HOSTILE_VALUES))
def test_a_checkpoint_holding_hostile_values_under_a_matching_checksum(run_dir, where, value):
    out, path = _copy(run_dir)
    state = torch.load(path, weights_only=True)
    target = _paths(state)[int(where * len(_paths(state)))]
    parent = state
    for key in target[:-1]:
        parent = parent[key]
    parent[target[-1]] = value
    state["checksum"] = ckpt.state_digest(state)  # well-formed on disk, wrong inside
    torch.save(state, path)
    refused = one_line_or_refusal(lambda: _resume(out, path), (ValueError, FormatError))
    if isinstance(refused, Exception):
        assert str(path) in str(refused) or "--resume" in str(refused) or target[0] == "config", (target, refused)
