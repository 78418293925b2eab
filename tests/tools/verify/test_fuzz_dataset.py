"""Fault injection into a dataset (issue 25): mutated and truncated manifest, index arrays, tag table, vocabulary
files and masks, fed through every public entry point that reads them: Dataset() and its arrays, Vocab() and its
class table, masks, `verify` (documented never to raise) and the `inspect` and `verify` commands. Each must give
a value, a one-line refusal or a reported problem: never a traceback, a signal or a hang, and memory stays bounded."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.vocab import Vocab
from tagstream.loader.data.writer import write_mask
from tagstream.tools.cli import main as cli
from tagstream.tools.verify.checks import verify
from tagstream.tools.vocab import VocabOptions, build_vocab
from tests.helpers.fuzz import (
    array_mutation,
    byte_mutation,
    cli_one_line,
    fuzz_settings,
    json_mutation,
    mutate_array,
    mutate_bytes,
    mutate_json,
    one_line_or_refusal,
)
from tests.helpers.tiny import TinyDatasets

pytestmark = pytest.mark.timeout(600)  # a hang fails the test instead of the suite

INDEX_FILES = [f"index/{s}.{a}.npy" for s in ("00000", "00002") for a in fmt.INDEX_ARRAYS]
VOCAB_ARRAYS = ["vocab/v/labels.npy", "vocab/v/label_offsets.npy"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """12 images in shards of 5, 5, 2, with vocabulary 'v' and mask 'm'."""
    root = TinyDatasets(tmp_path_factory)(12, shard_size=5)
    build_vocab(root, "v", VocabOptions(min_count=1))
    write_mask(root, "m", np.arange(12) % 4 == 0)
    assert verify(root).ok
    return root


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _copy(pristine: Path, scratch: Path) -> Path:
    return Path(shutil.copytree(pristine, Path(tempfile.mkdtemp(dir=scratch)) / "ds"))


def _read_everything(root: Path) -> None:
    """What a run reads: the manifest, every index array of every shard, the vocabulary and its classes, the mask."""
    ds = Dataset(root)
    for name in fmt.INDEX_ARRAYS:
        ds.global_array(name)
    ds.image_sizes(np.arange(len(ds)))
    ds.locate(np.arange(len(ds)))
    ds.tags  # noqa: B018 - reading it is the check
    vocab = Vocab(ds, "v")
    vocab.classes()
    ds.load_mask("m")


def _every_entry_point(root: Path) -> None:
    one_line_or_refusal(lambda: _read_everything(root), (fmt.FormatError, ValueError))
    report = verify(root)  # never raises: every fault is a problem
    assert all("\n" not in str(p) for p in report.problems)
    cli_one_line(CliRunner().invoke(cli, ["verify", str(root)]))
    cli_one_line(CliRunner().invoke(cli, ["inspect", str(root), "--vocab", "v"]))


@fuzz_settings()
@given(mutation=st.one_of(json_mutation().map(lambda m: ("json", m)), byte_mutation().map(lambda m: ("bytes", m))))
def test_a_mutated_manifest(pristine, scratch, mutation):
    root = _copy(pristine, scratch)
    kind, m = mutation
    (mutate_json if kind == "json" else mutate_bytes)(root / fmt.MANIFEST, m)
    _every_entry_point(root)


@fuzz_settings()
@given(
    target=st.sampled_from(INDEX_FILES),
    mutation=st.one_of(array_mutation().map(lambda m: ("array", m)), byte_mutation().map(lambda m: ("bytes", m))),
)
def test_mutated_index_arrays(pristine, scratch, target, mutation):
    root = _copy(pristine, scratch)
    kind, m = mutation
    (mutate_array if kind == "array" else mutate_bytes)(root / target, m)
    _every_entry_point(root)


@fuzz_settings()
@given(
    target=st.sampled_from(["vocab/v/classes.tsv", "vocab/v/vocab.json", fmt.TAGS, "masks/m.npy", *VOCAB_ARRAYS]),
    mutation=byte_mutation(),
    values=array_mutation(),
)
def test_mutated_vocabulary_tags_and_masks(pristine, scratch, target, mutation, values):
    root = _copy(pristine, scratch)
    if target in VOCAB_ARRAYS and mutation[0] == "zero":
        mutate_array(root / target, values)  # well-formed .npy, inconsistent labels
    else:
        mutate_bytes(root / target, mutation)
    _every_entry_point(root)


@fuzz_settings(examples=10)
@given(mutation=json_mutation())
def test_a_mutated_vocabulary_json(pristine, scratch, mutation):
    root = _copy(pristine, scratch)
    mutate_json(root / "vocab/v/vocab.json", mutation)
    _every_entry_point(root)


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000, '{"format": "tagstream", "version": 2, "images": %d, "shards": []}' % (1 << 70)],
    ids=["nested-1e5-deep", "int-beyond-int64"],
)
def test_hostile_manifests_cost_one_line_and_no_gigabytes(tmp_path, text):
    """A manifest nested 10^5 deep, or holding an integer beyond int64, read by `tagstream verify` in a child
    process: exit 1, the manifest named as damaged in one line (then the one-line summary), no traceback, and the
    child's own peak RSS under 512 MiB — VmHWM of its own address space, read by the child as it ends (rusage's
    ru_maxrss would carry the forking pytest process's peak across the exec)."""
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / fmt.MANIFEST).write_text(text)
    child = (
        "import sys\n"
        "from tagstream.tools.cli import main\n"
        "try:\n    main(['verify', sys.argv[1]])\n    code = 0\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        "hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
        "open(sys.argv[2], 'w').write(hwm.split()[1])\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", child, str(ds), str(tmp_path / "hwm")], capture_output=True, text=True, timeout=300
    )
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 2 and "Traceback" not in "".join(lines), lines
    assert lines[0].startswith("DAMAGED ") and fmt.MANIFEST in lines[0] and lines[1].startswith("Error: 1 problem"), (
        lines
    )
    assert int((tmp_path / "hwm").read_text()) / 1024 < 512
