"""The same-bytes check from the stored digests: the pairs of a full read, reading only the matching images; a
forged digest array costs reads, never a false pair; a dataset without digests falls back to reading them all."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tagstream.loader.data.dataset import Dataset
from tagstream.tools.cli import main
from tagstream.tools.dedup.exact import READ, STORED, exact_pairs
from tests.helpers.damage import forge_digests
from tests.helpers.exact_worlds import EVAL_COPIES, TRAIN_REPEATS, build_exact_worlds, drop_digests, same_bytes_oracle


@pytest.fixture(scope="module")
def exact_worlds(tmp_path_factory):
    return build_exact_worlds(tmp_path_factory.mktemp("exact"))


def _pairs(check) -> list[list[tuple[int, int]]]:
    return [list(zip(t.tolist(), j.tolist())) for t, j in check.pairs]


def _open(worlds, train=None):
    return Dataset(train or worlds.train), [Dataset(p) for p in worlds.evals]


def test_stored_digests_find_the_pairs_of_a_full_read(exact_worlds, tmp_path):
    train, evals = _open(exact_worlds)
    truth = same_bytes_oracle(train, evals)
    planted = [
        sorted((t2, j) for j, t in copies.items() for t2 in [t, *(r for r, s in TRAIN_REPEATS.items() if s == t)])
        for copies in EVAL_COPIES
    ]
    assert truth == planted  # the planted copies, train image 2's repeat included, and nothing else
    stored = exact_pairs(train, evals)
    assert train.every_shard_has("digest") and stored.how == STORED and _pairs(stored) == truth
    assert stored.candidates == len({t for pairs in truth for t, _ in pairs}) and stored.wrong_digests == 0
    full = exact_pairs(Dataset(drop_digests(exact_worlds.train, tmp_path / "old")), evals)
    assert full.how == READ and _pairs(full) == truth


def test_a_dataset_partly_without_digests_reads_only_those_shards(exact_worlds, tmp_path):
    train, evals = _open(exact_worlds, drop_digests(exact_worlds.train, tmp_path / "mixed", shards=["00001"]))
    assert not train.every_shard_has("digest")
    check = exact_pairs(train, evals)
    assert check.how == f"{STORED}, 1 of 4 shards read"
    assert _pairs(check) == same_bytes_oracle(train, evals)


@pytest.mark.parametrize("side", ["train", "eval", "both"])
@pytest.mark.parametrize("forge", ["all equal", "shuffled"])
def test_forged_digests_give_no_false_pair(exact_worlds, tmp_path, side, forge):
    """Digest arrays edited (checksums re-recorded): every digest set to train image 2's (which eval image 0
    copies), or shuffled within each shard. Pairs can be lost, never made; each image is read at most once more."""
    train_root = shutil.copytree(exact_worlds.train, tmp_path / "train")
    eval_roots = [shutil.copytree(p, tmp_path / p.name) for p in exact_worlds.evals]
    target = np.uint64(Dataset(train_root).index_array(0, "digest")[2])
    rng = np.random.default_rng(0)
    for root in [train_root] * (side != "eval") + eval_roots * (side != "train"):
        forge_digests(root, (lambda a: np.full_like(a, target)) if forge == "all equal" else rng.permutation)
    train, evals = Dataset(train_root), [Dataset(p) for p in eval_roots]
    truth = same_bytes_oracle(train, evals)
    check = exact_pairs(train, evals)
    found = _pairs(check)
    assert all(set(f) <= set(t) for f, t in zip(found, truth)), (found, truth)  # lost ones allowed, no false one
    assert check.wrong_digests > 0
    if forge == "all equal":  # only train images 2 and 40 (its repeat) really have that digest, and eval image 0
        n_train, n_eval = train.num_images, sum(ds.num_images for ds in evals)
        forged_train, forged_eval = side != "eval", side != "train"
        assert check.candidates == (n_train if forged_train else 2)
        assert check.wrong_digests == (n_train - 2) * forged_train + (n_eval - 1) * forged_eval
        assert found == [[(2, 0), (40, 0)], []]


def test_the_summary_says_how_the_bytes_were_checked(exact_worlds, tmp_path):
    old = drop_digests(exact_worlds.train, tmp_path / "old")
    for train, how in ((exact_worlds.train, STORED), (old, READ)):
        args = ["dedup", str(train), "--against", str(exact_worlds.evals[0]), "--name", "ex", "--json"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output)
        assert summary["exact_check"] == how and summary["exact_wrong_digests"] == 0
        assert summary["against"][0]["exact_pairs"] == 5  # eval 0 -> train 2 and 40, eval 1 and 5 -> 17, eval 3 -> 59
    result = CliRunner().invoke(main, ["dedup", str(old), "--against", str(exact_worlds.evals[0]), "--name", "ex2"])
    assert result.exit_code == 0 and f"same bytes: {READ}" in result.output
    forged = shutil.copytree(exact_worlds.train, tmp_path / "forged")
    forge_digests(forged, np.flip)  # each shard's digests reversed: the images they point to are not those
    result = CliRunner().invoke(main, ["dedup", str(forged), "--against", str(exact_worlds.evals[0]), "--name", "f"])
    assert result.exit_code == 0, result.output
    assert "images read have a stored digest their bytes do not give" in result.output
    assert "run `tagstream verify` on TRAIN and EVAL" in result.output


REPO = Path(__file__).resolve().parents[3]
_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from tagstream.loader.data import Dataset, store
    from tagstream.tools.dedup.exact import exact_pairs
    from tests.helpers.procfs import mapped_rss

    store.RELEASE_EVERY = 1 << 62  # keep every page the check touched mapped: the measure counts them all
    train, evals = Dataset(sys.argv[1]), [Dataset(p) for p in sys.argv[2:]]
    check = exact_pairs(train, evals)
    shards = str(Path(sys.argv[1]).resolve() / "shards")
    print(json.dumps({"mapped": mapped_rss(lambda path: path.startswith(shards)), "how": check.how, "pairs": sum(len(t) for t, _ in check.pairs)}))
    """
)


def _mapped_by_exact_check(train, evals) -> dict:
    """exact_pairs in a fresh child process, and the pages of the training shards it has mapped then (the
    shards' LMDB environments stay open and the reader's periodic page release is off, so every page the check
    touched is still counted)."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(train), *map(str, evals)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,  # the child imports tests.helpers
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_check_with_digests_maps_a_small_part_of_the_shards(tmp_path):
    """1,200 noise images of ~20 KB (about 25 MB of shards): with digests, the check maps the pages of the five
    matching images, their LMDB branches and the kernel's fault-around (up to 64 KB a fault): a few hundred KB an
    image; reading every image maps them all."""
    worlds = build_exact_worlds(tmp_path / "w", n_train=1200, shard_size=300, side=128)
    data = sum(p.stat().st_size for p in (worlds.train / "shards").glob("*.lmdb/data.mdb"))
    assert data > 20 << 20
    stored = _mapped_by_exact_check(worlds.train, worlds.evals)
    full = _mapped_by_exact_check(drop_digests(worlds.train, tmp_path / "old"), worlds.evals)
    assert stored["how"] == STORED and full["how"] == READ and stored["pairs"] == full["pairs"] == 6
    assert full["mapped"] > data // 2  # the measure sees a full read
    assert stored["mapped"] < data // 8, (stored, full, data)
