"""`tagstream bench loader --peers`: every installed peer and the full-decode ceilings run on a tiny photo-like
dataset through the command, each checked and measured in its own process; a peer that does not import is
skipped with one line; the pieces (output check, crops across epochs, CPU and PSS of a process tree)."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from tagstream.tools.bench.peers import PEERS, parse_peers
from tagstream.tools.bench.peers.contenders import LOADERS
from tagstream.tools.bench.peers.measure import (
    CEILINGS,
    MAX_TIMED_EPOCHS,
    check_batch,
    crops_differ,
    tree_cpu_seconds,
    tree_pss_bytes,
)
from tagstream.tools.cli.bench_loader import bench_loader


def _installed(name: str) -> bool:
    module = LOADERS[name][2]
    if module is None:
        return True
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_peers_run_and_a_missing_peer_is_skipped(tmp_path, monkeypatch):
    """All peers asked for: the installed ones run (webdataset made unimportable here: the skip path), each
    contender's figures, the ratios, the pixel check, the table and the plot."""
    monkeypatch.setitem(sys.modules, "webdataset", None)  # `import webdataset` raises ImportError
    args = [str(tmp_path / "ds"), "--make", "32", "--batch-size", "8", "--workers", "1", "--image-size", "32"]
    args += ["--rounds", "1", "--peers", "all", "--peers-cache", str(tmp_path / "cache")]
    result = CliRunner().invoke(bench_loader, [*args, "--json", "--plot", str(tmp_path / "peers.png")])
    assert result.exit_code == 0, (result.output, repr(result.exception))
    r = json.loads(result.output[result.output.index("{") :])
    assert "webdataset: skipped, not installed" in result.output  # the one line, on stderr
    assert set(r["skipped"]) >= {"webdataset"}
    ran = [n for n in PEERS if n != "webdataset" and _installed(n)]
    assert set(r["skipped"]) == set(PEERS) - set(ran)
    assert list(r["contenders"]) == ["ours", *ran, *CEILINGS]
    for name, c in r["contenders"].items():
        assert "failed" not in c, (name, c)
        (row,) = c["rounds"]
        assert row["images"] >= 32 - 8 and c["images_per_s"] > 0 and c["cpu_ms_per_image"] > 0
        assert c["peak_pss_bytes"] > 10 << 20
        if name not in CEILINGS:  # the same images came back in epoch 1, cropped differently
            assert row["check"]["common"] > 0 and row["check"]["differ"] * 2 >= row["check"]["common"]
    assert (
        r["contenders"]["dataloader"]["rounds"][0]["images"] == 32 * MAX_TIMED_EPOCHS
    )  # a peer's epoch: every image once, timed back to back
    q = r["ratios"]
    assert q["ours_vs_full-turbo"] == pytest.approx(
        r["contenders"]["ours"]["images_per_s"] / r["contenders"]["full-turbo"]["images_per_s"]
    )
    assert q["best_peer"] in ran
    p = r["pixels"]
    assert p["crops"] == 400 and p["exact"]["max"] <= 1 and p["dct"]["scaled"] > 0  # 32 px: crops scale
    assert (tmp_path / "peers.png").stat().st_size > 10_000
    cached = sorted(os.listdir(tmp_path / "cache"))
    table = CliRunner().invoke(
        bench_loader, args[:-4] + ["--peers", "dataloader", "--peers-cache", str(tmp_path / "cache")]
    )
    assert table.exit_code == 0, (table.output, repr(table.exception))
    assert "ours / libjpeg-turbo full decode" in table.output and "DataLoader over files" in table.output
    assert sorted(os.listdir(tmp_path / "cache")) == cached  # the formats were reused, not rewritten


@pytest.mark.timeout(600)
def test_one_peer_and_a_missing_one_through_the_command(tmp_path, monkeypatch):
    """The fast path `make test` runs (the peers extra is not installed there): ours, the DataLoader peer and the
    ceilings, each checked and measured; webdataset made unimportable is skipped with its one line."""
    monkeypatch.setitem(sys.modules, "webdataset", None)
    args = [str(tmp_path / "ds"), "--make", "24", "--batch-size", "8", "--workers", "1", "--image-size", "32"]
    args += ["--rounds", "1", "--peers", "dataloader,webdataset", "--peers-cache", str(tmp_path / "cache"), "--json"]
    result = CliRunner().invoke(bench_loader, args)
    assert result.exit_code == 0, (result.output, repr(result.exception))
    r = json.loads(result.output[result.output.index("{") :])
    assert "webdataset: skipped, not installed" in result.output and list(r["skipped"]) == ["webdataset"]
    assert list(r["contenders"]) == ["ours", "dataloader", *CEILINGS]
    for name, c in r["contenders"].items():
        assert "failed" not in c and c["images_per_s"] > 0 and c["cpu_ms_per_image"] > 0, (name, c)
    # a peer's epoch is every image once, timed MAX_TIMED_EPOCHS times back to back
    assert r["contenders"]["dataloader"]["rounds"][0]["images"] == 24 * MAX_TIMED_EPOCHS
    check = r["contenders"]["dataloader"]["rounds"][0]["check"]
    assert check["common"] > 0 and check["differ"] * 2 >= check["common"]  # crops differ across epochs
    assert r["ratios"]["best_peer"] == "dataloader"


def test_unknown_peers_are_named_with_the_choices():
    assert parse_peers("all") == PEERS
    assert parse_peers("torchvision, ffcv") == ("ffcv", "torchvision")
    with pytest.raises(ValueError, match=r"unknown \['dali'\]; choose from ffcv"):
        parse_peers("ffcv,dali")
    result = CliRunner().invoke(bench_loader, ["/nonexistent", "--peers", "fast"])
    assert result.exit_code == 2 and "unknown ['fast']" in result.output


def test_the_output_check_refuses_what_is_not_a_uint8_crop():
    good = np.zeros((4, 3, 32, 32), np.uint8)  # NCHW is accepted
    images, ids = check_batch(good, np.arange(4), 32)
    assert images.shape == (4, 32, 32, 3) and ids.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="float32"):
        check_batch(good.astype(np.float32), np.arange(4), 32)
    with pytest.raises(ValueError, match=r"\(n, 32, 32, 3\)"):
        check_batch(np.zeros((4, 30, 32, 3), np.uint8), np.arange(4), 32)
    first = (np.stack([np.full((2, 2, 3), i, np.uint8) for i in range(3)]), np.array([7, 8, 9]))
    assert crops_differ(first, {8: np.full((2, 2, 3), 1, np.uint8), 9: np.zeros((2, 2, 3), np.uint8)}) == {
        "common": 2,
        "differ": 1,
    }


def test_cpu_and_pss_of_this_process_tree():
    before = tree_cpu_seconds(os.getpid())
    np.linalg.svd(np.random.default_rng(0).random((400, 400)))
    assert tree_cpu_seconds(os.getpid()) > before
    assert tree_pss_bytes(os.getpid()) > 10 << 20


def test_the_pss_sampler_rests_while_a_contender_is_timed(monkeypatch):
    """PeakPss samples every `every` seconds, but inside paused() only as it starts and as it ends (reading
    smaps_rollup costs ~50 ms of CPU a sample for a loader's tree: it would slow what is timed)."""
    from tagstream.tools.bench.peers import measure

    calls = []
    monkeypatch.setattr(measure, "tree_pss_bytes", lambda pid: calls.append(pid) or 100 * len(calls))
    sampler = measure.PeakPss(every=0.02)
    deadline = time.monotonic() + 10
    while len(calls) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) >= 5  # sampling while not paused
    with sampler.paused():
        during = len(calls)
        time.sleep(0.3)  # ~15 samples' worth
        assert len(calls) - during <= 1  # at most the one the thread had begun as the pause came
    after = len(calls)
    assert sampler.stop() == 100 * len(calls) and len(calls) >= after
    assert after - during <= 2  # the closing sample, and at most the one begun before the pause


def test_a_loader_is_timed_over_enough_epochs_that_ready_batches_weigh_little():
    from tagstream.tools.bench.peers.measure import TIMED_IMAGES, timed_epochs

    assert timed_epochs(3000) == 3 and timed_epochs(TIMED_IMAGES) == 1 and timed_epochs(5000) == 2
    assert timed_epochs(32) == MAX_TIMED_EPOCHS and timed_epochs(0) == MAX_TIMED_EPOCHS


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    from tagstream.tools.bench.loader import make_bench_dataset

    return make_bench_dataset(tmp_path_factory.mktemp("peers") / "ds", 6, workers=1)


def test_the_cache_never_removes_a_folder_it_did_not_write(tiny_bench, tmp_path):
    """--peers-cache pointed at a folder holding the user's own files/: refused with the folder named, nothing
    touched; through the command, a one-line error."""
    from tagstream.tools.bench.peers.formats import prepare_formats

    cache = tmp_path / "mine"
    (cache / "files").mkdir(parents=True)
    (cache / "files" / "keep.txt").write_text("the user's")
    with pytest.raises(ValueError, match="was not written by `bench loader --peers`"):
        prepare_formats(tiny_bench, cache, ("files",), echo=print)
    assert (cache / "files" / "keep.txt").read_text() == "the user's"
    assert sorted(p.name for p in cache.iterdir()) == ["files"]
    args = [str(tiny_bench.root), "--batch-size", "2", "--workers", "1", "--peers", "dataloader"]
    result = CliRunner().invoke(bench_loader, [*args, "--peers-cache", str(cache)])
    assert result.exit_code != 0 and "was not written by `bench loader --peers`" in result.output
    assert (cache / "files" / "keep.txt").read_text() == "the user's"


def test_the_cache_rewrites_only_its_own_stale_or_cut_short_folders(tiny_bench, tmp_path):
    from tagstream.tools.bench.peers.formats import file_path, prepare_formats

    cache = tmp_path / "cache"
    done = prepare_formats(tiny_bench, cache, ("files", "webdataset"), echo=print)
    assert set(done) == {"files", "webdataset"}
    first = file_path(cache, 0).read_bytes()
    claim = json.loads((cache / "files.tagstream-peers.json").read_text())
    assert claim["complete"] is True and claim["images"] == 6
    # a second run reuses the folders as they are
    (cache / "webdataset" / "sentinel").write_text("x")
    prepare_formats(tiny_bench, cache, ("files", "webdataset"), echo=print)
    assert (cache / "webdataset" / "sentinel").exists()
    # a write cut short (claimed, never completed) and a copy of another dataset are written again
    (cache / "webdataset.tagstream-peers.json").write_text(json.dumps({**claim, "complete": False}))
    (cache / "files.tagstream-peers.json").write_text(json.dumps({**claim, "dataset": "/elsewhere"}))
    prepare_formats(tiny_bench, cache, ("files", "webdataset"), echo=print)
    assert not (cache / "webdataset" / "sentinel").exists()
    assert file_path(cache, 0).read_bytes() == first
    assert json.loads((cache / "webdataset.tagstream-peers.json").read_text())["complete"] is True
    # a cache of the earlier layout (its stamp inside the folder, no claim beside it) is ours too: written again
    (cache / "webdataset.tagstream-peers.json").unlink()
    (cache / "webdataset" / ".tagstream-peers.json").write_text(json.dumps(claim))
    assert "webdataset" in prepare_formats(tiny_bench, cache, ("files", "webdataset"), echo=print)
    assert (cache / "webdataset.tagstream-peers.json").exists()
