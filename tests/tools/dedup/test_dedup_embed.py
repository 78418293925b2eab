"""`tagstream dedup --method embed|both`: planted feature copies found exactly, the mask equal to the reported
pairs, the three faiss indexes against a NumPy oracle, the contamination report, a real checkpoint, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tagstream.loader.data.dataset import Dataset
from tagstream.tools.cli import main
from tagstream.tools.dedup.features import EmbedMethod, Features
from tagstream.tools.dedup.knn import cosine_join, plan_index
from tagstream.tools.dedup.pairs import read_pairs
from tagstream.tools.dedup.run import run_dedup
from tagstream.train.embed_io import save_embeddings
from tests.helpers.dedup_worlds import N_EVAL, N_TRAIN, PLANTED, tiny_checkpoint

DIM = 16
# eval image -> train image whose features it carries exactly (an "embedding copy"); eval 4 is not a hash copy
EMBED_COPIES = {0: 3, 1: 10, 4: 8}


def _features(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train = rng.standard_normal((N_TRAIN, DIM)).astype(np.float32)
    evals = rng.standard_normal((N_EVAL, DIM)).astype(np.float32)
    for e, t in EMBED_COPIES.items():
        evals[e] = train[t] * 3.0  # same direction, other length: cosine 1 after L2 normalisation
    return train, evals


@pytest.fixture
def files(tmp_path):
    train, evals = _features()
    save_embeddings(tmp_path / "train.npy", train, np.arange(N_TRAIN))
    save_embeddings(tmp_path / "eval.npz", evals, np.arange(N_EVAL))
    return tmp_path / "train.npy", tmp_path / "eval.npz"


def _cli(worlds, *args):
    return CliRunner().invoke(main, ["dedup", str(worlds.train), "--against", str(worlds.eval), *args])


def test_identical_features_are_all_found_and_the_mask_is_exactly_the_pairs(worlds, files):
    result = _cli(
        worlds,
        "--name",
        "emb",
        "--method",
        "embed",
        "--no-exact",
        "--threshold",
        "0.999",
        "--features",
        str(files[0]),
        "--against-features",
        str(files[1]),
        "--json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    rows = read_pairs(worlds.train / "masks" / "emb.pairs.tsv")
    assert sorted((r.train, r.eval) for r in rows) == sorted((t, e) for e, t in EMBED_COPIES.items())
    assert all(r.by_embed and not r.by_hash and r.similarity == pytest.approx(1.0, abs=1e-5) for r in rows)
    mask = Dataset(worlds.train).load_mask("emb")
    assert np.flatnonzero(mask).tolist() == sorted({r.train for r in rows})
    assert summary["excluded"] == 3 and summary["against"][0]["index"] == "exact (IndexFlatIP)"
    assert summary["against"][0]["contamination"]["contaminated"] == {"any": 3, "embed": 3}


def test_both_is_the_union_and_scores_every_pair_both_ways(worlds, files):
    train, evals = _features()
    summary = run_dedup(
        worlds.train,
        [worlds.eval],
        name="u",
        method="both",
        exact=True,
        embedding=EmbedMethod(threshold=0.999, features=(str(files[0]),), against_features=(str(files[1]),)),
    )
    rows = {(r.train, r.eval): r for r in read_pairs(worlds.train / "masks" / "u.pairs.tsv")}
    hash_pairs = {(t, e) for e, (t, _) in PLANTED.items()}
    embed_pairs = {(t, e) for e, t in EMBED_COPIES.items()}
    assert set(rows) == hash_pairs | embed_pairs
    for key, r in rows.items():
        assert r.by_hash == (key in hash_pairs) and r.by_embed == (key in embed_pairs)
        t, e = key
        cos = train[t] @ evals[e] / np.linalg.norm(train[t]) / np.linalg.norm(evals[e])
        assert r.similarity == pytest.approx(cos, abs=1e-5)  # hash-only pairs get their cosine too
    assert np.flatnonzero(Dataset(worlds.train).load_mask("u")).tolist() == sorted({t for t, _ in rows})
    c = summary["against"][0]["contamination"]
    assert c["contaminated"] == {"any": 5, "hash": 4, "embed": 3, "exact": 1}


def test_contamination_per_class_counts_eval_images(worlds, files):
    from tagstream.tools.vocab.build import VocabOptions, build_vocab

    if "labels" not in Dataset(worlds.eval).vocab_names():
        build_vocab(worlds.eval, "labels", VocabOptions())
    summary = run_dedup(
        worlds.train,
        [worlds.eval],
        name="c",
        method="embed",
        exact=False,
        eval_vocab="labels",
        embedding=EmbedMethod(threshold=0.999, features=(str(files[0]),), against_features=(str(files[1]),)),
    )
    c = summary["against"][0]["contamination"]
    assert c["vocab"] == "labels"
    # eval image i carries #m{i % 3}: copies at 0, 1, 4 -> m0: {0}, m1: {1, 4}; all: 3 of 8
    assert c["per_class"]["m0"] == {"images": 3, "any": 1, "embed": 1}
    assert c["per_class"]["m1"] == {"images": 3, "any": 2, "embed": 2}
    assert c["per_class"]["m2"] == {"images": 2, "any": 0, "embed": 0}
    assert c["per_class"]["all"]["any"] == 3


def _oracle(train: np.ndarray, evals: np.ndarray, t: float) -> set[tuple[int, int]]:
    tn = train / np.linalg.norm(train, axis=1, keepdims=True)
    en = evals / np.linalg.norm(evals, axis=1, keepdims=True)
    i, j = np.nonzero(tn @ en.T >= t)
    return set(zip(i.tolist(), j.tolist()))


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_each_index_finds_the_planted_near_copies(kind):
    rng = np.random.default_rng(3)
    evals = rng.standard_normal((600, 32)).astype(np.float32)
    train = rng.standard_normal((3000, 32)).astype(np.float32)
    where = rng.choice(3000, 200, replace=False)
    source = rng.integers(0, 600, 200)
    train[where] = evals[source] + 0.15 * rng.standard_normal((200, 32)).astype(np.float32)  # cosine ~0.99
    feats = Features("t", 32, 3000, ((train, np.arange(3000)),))
    en = evals / np.linalg.norm(evals, axis=1, keepdims=True)
    (ti, ei, sim), plan = cosine_join(feats, en, 0.9, kind=kind, block=700)
    found = set(zip(ti.tolist(), ei.tolist()))
    truth = _oracle(train, evals, 0.9)
    assert plan.kind == kind and set(zip(where.tolist(), source.tolist())) <= truth
    if kind == "flat":
        assert found == truth
    else:
        assert found <= truth and len(found) >= 0.98 * len(truth)
    assert np.all(sim >= 0.9)


def test_index_rule():
    assert plan_index(1000, 10**9).kind == "flat"  # tiny base: exact
    assert plan_index(10**5, 10**5).kind == "flat"  # 10^10 pairs: exact
    ivf = plan_index(10**5, 10**7)
    assert ivf.kind == "ivf" and ivf.nlist == 1024  # 4 sqrt(10^5) = 1265 -> 2^10
    assert plan_index(10**7, 10**9).nlist == 16384
    assert plan_index(10**5, 10**7, "hnsw").kind == "hnsw"
    with pytest.raises(ValueError, match="not one of"):
        plan_index(10, 10, "lsh")


def test_parts_give_the_same_pairs_as_one_file(worlds, files, tmp_path):
    train, _ = _features()
    order = np.random.default_rng(1).permutation(N_TRAIN)
    parts = []
    for k, rows in enumerate(np.array_split(order, 3)):
        save_embeddings(tmp_path / f"p{k}.npz", train[rows], rows)
        parts.append(str(tmp_path / f"p{k}.npz"))
    emb = EmbedMethod(threshold=0.999, features=tuple(parts), against_features=(str(files[1]),))
    run_dedup(worlds.train, [worlds.eval], name="parts", method="embed", exact=False, embedding=emb)
    rows = read_pairs(worlds.train / "masks" / "parts.pairs.tsv")
    assert sorted((r.train, r.eval) for r in rows) == sorted((t, e) for e, t in EMBED_COPIES.items())


def _write(path, feats, idx=None):
    save_embeddings(path, feats, np.arange(feats.shape[0]) if idx is None else idx)
    return str(path)


@pytest.mark.parametrize(
    "case, message",
    [
        ("short", "cover every image"),
        ("repeated", "1 repeated"),
        ("dimension", "dimensions differ"),
        ("nan", "not finite"),
        ("zero", "all zero"),
        ("outside", "outside"),
        ("count", "one per --against"),
        ("missing", "does not exist"),
        ("neither", "needs --features"),
        ("threshold", "(0, 1]"),
    ],
)
def test_bad_feature_inputs_are_clear_errors(worlds, tmp_path, case, message):
    train, evals = _features()
    t = _write(tmp_path / "t.npy", train)
    e = _write(tmp_path / "e.npy", evals)
    args = ["--features", t, "--against-features", e]
    if case == "short":
        args[1] = _write(tmp_path / "s.npy", train[:-1])
    elif case == "repeated":
        args[1] = _write(tmp_path / "r.npy", train, np.r_[np.arange(N_TRAIN - 1), 0])
    elif case == "dimension":
        args[3] = _write(tmp_path / "d.npy", evals[:, :8])
    elif case in ("nan", "zero"):
        bad = train.copy()
        bad[5] = np.nan if case == "nan" else 0.0
        args[1] = _write(tmp_path / "b.npy", bad)
    elif case == "outside":
        args[3] = _write(tmp_path / "o.npy", evals, np.arange(N_EVAL) + 5)
    elif case == "count":
        args += ["--against-features", e]
    elif case == "missing":
        args[1] = str(tmp_path / "nothing.npy")
    elif case == "neither":
        args = []
    elif case == "threshold":
        args += ["--threshold", "1.5"]
    result = _cli(worlds, "--name", "bad", "--method", "embed", "--no-exact", *args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert not (worlds.train / "masks" / "bad.npy").exists()


def test_an_eval_set_with_no_images_is_refused(worlds, tmp_path):
    from tagstream.loader.data.writer import write_manifest

    empty = tmp_path / "empty"
    empty.mkdir()
    write_manifest(empty, [], tags=0, source={"kind": "test"})
    for method in ("hash", "embed"):
        extra = ["--features", "x.npy", "--against-features", "y.npy"] if method == "embed" else []
        result = CliRunner().invoke(
            main, ["dedup", str(worlds.train), "--against", str(empty), "--name", "e", "--method", method, *extra]
        )
        assert result.exit_code == 1 and "has no images" in result.output, result.output


def test_checkpoint_embeds_both_and_finds_the_identical_image(worlds, tmp_path, one_torch_thread):
    """A random-initialised tiny model saved as a checkpoint: identical stored bytes give identical features."""
    from tagstream.tools.vocab.build import VocabOptions, build_vocab

    for ds in (worlds.train, worlds.eval):
        if "v" not in Dataset(ds).vocab_names():
            build_vocab(ds, "v", VocabOptions())
    ckpt = tiny_checkpoint(tmp_path / "run", vocab="v")
    grid = tmp_path / "g.png"
    result = _cli(
        worlds,
        "--name",
        "ck",
        "--method",
        "embed",
        "--checkpoint",
        str(ckpt),
        "--threshold",
        "0.9999",
        "--device",
        "cpu",
        "--grid",
        str(grid),
        "--grid-pairs",
        "2",
    )
    assert result.exit_code == 0, result.output
    rows = read_pairs(worlds.train / "masks" / "ck.pairs.tsv")
    assert (21, 3) in {(r.train, r.eval) for r in rows}  # eval 3 is train 21's file: same bytes, same features
    assert all(r.similarity >= 0.9999 for r in rows if r.by_embed)
    assert "closest first" in result.output and grid.exists()


def test_hnsw_returns_every_neighbour_above_the_threshold_even_past_k():
    """30 base vectors near one direction: more than the first k=8 neighbours clear the threshold."""
    from tagstream.tools.dedup.knn import IndexPlan, build_index, range_pairs

    rng = np.random.default_rng(5)
    base = rng.standard_normal((200, 24)).astype(np.float32)
    base[:30] = base[0] + 0.05 * rng.standard_normal((30, 24)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    index = build_index(base, IndexPlan("hnsw"))
    rows, ids, sims = range_pairs(index, base[:1], 0.9)
    assert (sims >= 0.9).all()
    truth = np.flatnonzero(base @ base[0] >= 0.9)
    assert truth.size >= 30 and sorted(ids.tolist()) == truth.tolist() and (rows == 0).all()


def test_grid_shows_the_closest_pairs_first_or_a_seeded_sample():
    from tagstream.tools.dedup.grid import _choose

    # the pairs' distance and cosine columns; NaN: a pair with no features
    distance = np.array([9, 3, 7, 1], np.int64)
    cosine = np.array([0.91, np.nan, 0.99, 0.91], np.float32)
    assert _choose(distance, cosine, 3, "closest", 0) == [2, 3, 0]  # cosine down, ties by distance, NaN last
    assert _choose(distance, cosine, 2, "random", 7) == _choose(distance, cosine, 2, "random", 7)
    assert len(set(_choose(distance, cosine, 4, "random", 1))) == 4
