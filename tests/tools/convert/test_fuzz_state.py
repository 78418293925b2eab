"""Fault injection into conversion state (issue 25): mutated and truncated `.convert/` state (the conversion's
record, each committed shard's state) under a rerun that resumes, and a part's `part.json` and shard states under
`merge`: each is a conversion, a resume, or one line saying what is wrong; never a traceback, a signal or a hang."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from tagstream.tools.cli import main as cli
from tests.helpers.fuzz import byte_mutation, cli_one_line, fuzz_settings, json_mutation, mutate_bytes, mutate_json
from tests.helpers.tiny import TinyDatasets

pytestmark = pytest.mark.timeout(600)

STATE_FILES = [".convert/state.json", ".convert/00000.json", ".convert/00001.json"]
PART_FILES = ["parts/00000-of-00002/part.json", "parts/00001-of-00002/part.json", ".convert/state.json"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return TinyDatasets(tmp_path_factory).source(10)


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory):
    """A one-process conversion whose manifest was lost, as if killed after its shards: a rerun resumes."""
    out = tmp_path_factory.mktemp("fuzz_state") / "ds"
    assert CliRunner().invoke(cli, ["convert", str(source), str(out), "--shard-size", "4"]).exit_code == 0
    (out / "manifest.json").unlink()
    return out


@pytest.fixture(scope="module")
def parted(source, tmp_path_factory):
    """A conversion in 2 parts, both converted, not yet merged."""
    out = tmp_path_factory.mktemp("fuzz_parts") / "ds"
    base = ["convert", str(source), str(out), "--shard-size", "3"]
    for args in (["--parts", "2"], ["--part", "0/2"], ["--part", "1/2"]):
        result = CliRunner().invoke(cli, [*base, *args])
        assert result.exit_code == 0, result.output
    return out


def _copy(root: Path) -> Path:
    return Path(shutil.copytree(root, Path(tempfile.mkdtemp(dir=root.parent)) / "ds"))


def _mutate(path: Path, mutation: tuple) -> None:
    kind, m = mutation
    (mutate_json if kind == "json" else mutate_bytes)(path, m)


MUTATIONS = st.one_of(json_mutation().map(lambda m: ("json", m)), byte_mutation().map(lambda m: ("bytes", m)))


@fuzz_settings(examples=20)
@given(target=st.sampled_from(STATE_FILES), mutation=MUTATIONS)
def test_a_rerun_over_mutated_conversion_state(converted, source, target, mutation):
    out = _copy(converted)
    _mutate(out / target, mutation)
    cli_one_line(CliRunner().invoke(cli, ["convert", str(source), str(out), "--shard-size", "4"]))


@fuzz_settings(examples=20)
@given(target=st.sampled_from(PART_FILES), mutation=MUTATIONS)
def test_merge_over_a_mutated_part(parted, target, mutation):
    out = _copy(parted)
    _mutate(out / target, mutation)
    cli_one_line(CliRunner().invoke(cli, ["merge", str(out)]))
