"""`tagstream dedup` end to end on tiny converted datasets with planted near and exact copies."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tagstream.loader.data.dataset import Dataset
from tagstream.tools.cli import main
from tagstream.tools.dedup.pairs import read_pairs
from tagstream.tools.dedup.run import run_dedup
from tests.helpers.dedup_worlds import N_TRAIN, PLANTED


def test_planted_copies_are_found_and_masked(worlds):
    result = CliRunner().invoke(main, ["dedup", str(worlds.train), "--against", str(worlds.eval), "--name", "ev"])
    assert result.exit_code == 0, result.output
    ds = Dataset(worlds.train)
    assert ds.mask_names() == ["ev"]
    mask = ds.load_mask("ev")  # the loader's own check: bool (N,)
    np.testing.assert_array_equal(np.flatnonzero(mask), sorted(t for t, _ in PLANTED.values()))
    rows = read_pairs(worlds.train / "masks" / "ev.pairs.tsv")
    assert [(r.train, r.eval_label, r.eval) for r in rows] == sorted((t, "eval", e) for e, (t, _) in PLANTED.items())
    assert all(r.distance <= 10 and not r.mirrored and r.similarity is None for r in rows)
    assert {r.train: r.exact for r in rows} == {3: False, 10: False, 17: False, 21: True}
    assert {r.train: r.by_hash for r in rows} == {3: True, 10: True, 17: True, 21: True}
    summary = json.loads((worlds.train / "masks" / "ev.summary.json").read_text())
    assert summary["excluded"] == 4 and summary["against"][0]["exact_pairs"] == 1
    assert "4 of 24 images excluded" in result.output


def test_several_eval_sets_and_a_grid(worlds, tmp_path):
    grid = tmp_path / "pairs.png"
    result = CliRunner().invoke(
        main,
        [
            "dedup",
            str(worlds.train),
            "--against",
            str(worlds.eval),
            "--against",
            str(worlds.eval2),
            "--name",
            "both",
            "--grid",
            str(grid),
            "--grid-pairs",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert [e["pairs"] for e in summary["against"]] == [4, 1]
    assert np.flatnonzero(Dataset(worlds.train).load_mask("both")).tolist() == [3, 5, 10, 17, 21]
    assert summary["grid"]["pairs_shown"] == 3
    with Image.open(grid) as im:
        assert im.format == "PNG" and im.width > 100


def test_mirrors_find_a_flipped_copy(worlds, tmp_path):
    grid = tmp_path / "m.png"
    summary = run_dedup(worlds.train, [worlds.eval2], name="m", exact=False, mirrors=True, grid=grid)
    assert summary["against"][0]["pairs"] == 2 and summary["against"][0]["mirrored_pairs"] == 1
    rows = read_pairs(worlds.train / "masks" / "m.pairs.tsv")
    assert [(r.train, r.eval, r.mirrored) for r in rows] == [(5, 0, False), (7, 2, True)]
    assert all(r.distance <= 10 for r in rows)
    assert summary["grid"]["pairs_shown"] == 2
    without = run_dedup(worlds.train, [worlds.eval2], name="m", exact=False)
    assert without["against"][0]["pairs"] == 1  # pHash alone does not survive a flip


def test_no_match_gives_an_empty_mask_and_a_grid_that_says_so(worlds, tmp_path):
    summary = run_dedup(worlds.eval2, [worlds.eval], name="none", max_distance=0, exact=False, grid=tmp_path / "g.png")
    assert summary["excluded"] == 0 and summary["grid"]["pairs_shown"] == 0
    with Image.open(tmp_path / "g.png") as im:
        assert im.format == "PNG"
    assert not Dataset(worlds.eval2).load_mask("none").any()
    assert read_pairs(worlds.eval2 / "masks" / "none.pairs.tsv") == []


def test_same_bytes_found_even_when_the_hash_misses(worlds, tmp_path):
    """Exact copies come from the stored bytes, not from pHash: damage the eval copy's hash and it is still found."""
    eval_copy = tmp_path / "eval"
    shutil.copytree(worlds.eval, eval_copy)
    for p in sorted((eval_copy / "index").glob("*.phash.npy")):
        h = np.load(p)
        np.save(p, ~h)  # every bit flipped: distance 64 from anything it matched
    summary = run_dedup(worlds.train, [eval_copy], name="x", max_distance=4)
    assert summary["against"][0]["pairs"] == 1 and summary["against"][0]["exact_pairs"] == 1
    (row,) = read_pairs(worlds.train / "masks" / "x.pairs.tsv")
    assert (row.train, row.eval, row.exact, row.distance, row.mirrored, row.by_hash) == (21, 3, True, 64, False, False)
    summary = run_dedup(worlds.train, [eval_copy], name="x", max_distance=4, exact=False)
    assert summary["excluded"] == 0  # rerun replaces the mask


@pytest.mark.parametrize(
    "args, message",
    [
        (["--name", "../up"], "mask name"),
        (["--name", "ok", "--max-distance", "40"], "40"),
        (["--name", "ok", "--grid-pairs", "0"], "0"),
    ],
)
def test_bad_options_are_refused_clearly(worlds, args, message):
    result = CliRunner().invoke(main, ["dedup", str(worlds.train), "--against", str(worlds.eval), *args])
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


def test_train_given_as_its_own_eval_set_is_refused(worlds):
    result = CliRunner().invoke(main, ["dedup", str(worlds.train), "--against", str(worlds.train), "--name", "self"])
    assert result.exit_code == 1 and "match itself" in result.output


def test_an_eval_path_that_is_not_a_dataset_is_a_clear_error(worlds, tmp_path):
    result = CliRunner().invoke(main, ["dedup", str(worlds.train), "--against", str(tmp_path), "--name", "z"])
    assert result.exit_code == 1 and "manifest.json" in result.output


def test_help_explains_and_shows_an_example():
    result = CliRunner().invoke(main, ["dedup", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "--against" in result.output


def test_masked_images_are_never_drawn_by_the_sampler(worlds):
    from tagstream.loader.data.vocab import Vocab
    from tagstream.loader.sampling.sampler import RankSampler, eligibility
    from tagstream.tools.vocab.build import VocabOptions, build_vocab

    run_dedup(worlds.train, [worlds.eval], name="s", max_distance=10)
    ds = Dataset(worlds.train)
    if "v" not in ds.vocab_names():
        build_vocab(worlds.train, "v", VocabOptions())
    vocab = Vocab(ds, "v")
    masked = set(np.flatnonzero(ds.load_mask("s")).tolist())
    assert masked == {3, 10, 17, 21}
    drawn_masked, drawn_all = set(), set()
    for rank in range(2):
        with_mask = RankSampler(ds, vocab, eligible=eligibility(ds, masks=("s",)), seed=1, rank=rank, world=2)
        without = RankSampler(ds, vocab, seed=1, rank=rank, world=2)
        for epoch in range(200):
            drawn_masked.update(with_mask.plan(epoch).tolist())
            drawn_all.update(without.plan(epoch).tolist())
    assert masked <= drawn_all  # without the mask they are drawn: the check below is not vacuous
    assert drawn_masked == set(range(N_TRAIN)) - masked


def test_inspect_lists_masks_with_their_excluded_counts(worlds):
    from tagstream.tools.inspection.report import inspect_dataset

    run_dedup(worlds.train, [worlds.eval], name="shown", max_distance=10, exact=False)
    rows = inspect_dataset(worlds.train)["masks"]["masks"]
    assert {"name": "shown", "excluded": 4, "of": N_TRAIN} in rows
    result = CliRunner().invoke(main, ["inspect", str(worlds.train)])
    assert result.exit_code == 0, result.output
    assert any(line.split()[:3] == ["shown", "4", str(N_TRAIN)] for line in result.output.splitlines())


def test_an_undecodable_eval_image_under_mirrors_is_a_clear_error(worlds, monkeypatch):
    from tagstream.loader.data.format import FormatError
    from tagstream.loader.data.store import ShardStore

    monkeypatch.setattr(ShardStore, "read_image", lambda self, index: b"not a jpeg")
    with pytest.raises(FormatError, match="does not decode"):
        run_dedup(worlds.train, [worlds.eval2], name="bad", exact=False, mirrors=True)


def test_a_mask_being_written_by_another_dedup_is_refused_and_the_old_one_kept(worlds, tmp_path):
    """Mask, pairs and summary are built in a temporary folder under the mask's lock and renamed into place."""
    import os

    from tagstream.loader.data.writer import stage_mask

    train = shutil.copytree(worlds.train, tmp_path / "train")  # the module's worlds stay as they are
    run_dedup(train, [worlds.eval], name="busy", max_distance=10, exact=False)
    before = (train / "masks" / "busy.npy").read_bytes()
    holder = stage_mask(train, "busy", outputs=("busy.npy",))  # another dedup of 'busy', writing
    try:
        result = CliRunner().invoke(main, ["dedup", str(train), "--against", str(worlds.eval), "--name", "busy"])
        assert result.exit_code == 1 and f"mask 'busy' is being built by another process (pid {os.getpid()})" in (
            result.output
        )
    finally:
        holder.close()
    assert (train / "masks" / "busy.npy").read_bytes() == before
    assert not [p for p in (train / "masks").iterdir() if p.name.endswith(".tmp")]
    assert Dataset(train).mask_names().count("busy") == 1
