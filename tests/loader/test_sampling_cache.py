"""The sampling cache: one computation per (vocabulary, sampling rule), then each rank reads only its own
blocks; a changed mask or vocabulary gets a new key (never a stale summary); damaged or unwritable caches
fall back to computing; range reads and range eligibility equal the slices of the whole."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tagstream.kernels.assign import pack_shards
from tagstream.kernels.counts import class_counts
from tagstream.kernels.weights import compute_weights
from tagstream.loader.data import format as fmt
from tagstream.loader.data.npyrange import NpyRange
from tagstream.loader.data.vocab import Vocab
from tagstream.loader.data.writer import write_mask
from tagstream.loader.sampling.eligible import Eligibility, eligibility
from tagstream.loader.sampling.range_weights import RangeWeights
from tagstream.loader.sampling.sampler import RankSampler
from tagstream.loader.sampling.summary import compute_summary, shard_chunks
from tests.helpers.index_only import write_index_only

RULE = Eligibility(masks=("dedup",), holdout_fraction=0.25, split="train")


@pytest.fixture
def dataset(tmp_path):
    return write_index_only(tmp_path / "ds")


def _sampler(ds, **kw) -> RankSampler:
    return RankSampler(ds, Vocab(ds, "v"), **{"eligible": RULE, "seed": 2, **kw})


def test_summary_in_small_chunks_equals_the_all_at_once_computation(dataset):
    vocab = Vocab(dataset, "v")
    ok = eligibility(dataset, masks=("dedup",), holdout_fraction=0.25, split="train")
    off, lab = np.asarray(vocab.label_offsets), np.asarray(vocab.labels)
    w = compute_weights(off, lab, vocab.num_classes, "sqrt", "mean", ok)
    source = RangeWeights(dataset, vocab, power=0.5, combine="mean", eligible=RULE)
    for chunk in (1, 37, 600, 10**9):  # one shard at a time (1) up to everything at once
        s = compute_summary(source, dataset.shard_starts, vocab.num_classes, chunk=chunk)
        assert np.array_equal(s.counts, class_counts(off, lab, ok, np.zeros(vocab.num_classes, np.int64)))
        packed = pack_shards(dataset.shard_starts, w, 1, cut=False)
        assert s.shard_sums.tolist() == packed.block_weights.tolist()  # bit for bit
        assert s.num_drawable == np.count_nonzero(w)
    assert shard_chunks(np.array([0, 5, 5, 20, 22]), 6) == [(0, 2), (2, 3), (3, 4)]
    assert np.array_equal(source.weights(500, 1700, s.counts), w[500:1700])


def test_second_sampler_reads_the_cache_and_only_its_own_blocks(dataset, monkeypatch):
    first = _sampler(dataset, rank=0, world=3)
    assert first.cache_hits == {"summary": False, "packing": False}
    reads: list[tuple[int, int]] = []
    real = RangeWeights.labels_of
    monkeypatch.setattr(RangeWeights, "labels_of", lambda self, lo, hi: reads.append((lo, hi)) or real(self, lo, hi))
    for rank in range(3):
        reads.clear()
        s = _sampler(dataset, rank=rank, world=3)
        assert s.cache_hits == {"summary": True, "packing": True}
        assert sorted(reads) == sorted(map(tuple, s.owned_ranges().tolist()))  # nothing outside its own blocks
        assert np.array_equal(s.plan(0), _sampler(dataset, rank=rank, world=3, cache=False).plan(0))
    entries = list((dataset.vocab_dir("v") / "sampling").iterdir())
    assert sorted(p.suffix for p in entries) == ["", ".lock"]


def test_a_changed_mask_or_vocabulary_is_never_served_stale(dataset):
    before = _sampler(dataset)
    n = dataset.num_images
    write_mask(dataset.root, "dedup", np.arange(n) % 3 == 0)  # rewritten: another inode, other times
    after = _sampler(dataset)
    assert after.cache_hits["summary"] is False and after.num_drawable != before.num_drawable
    assert after.num_drawable == np.count_nonzero(after.image_weights())
    fresh = _sampler(dataset, cache=False)
    assert np.array_equal(after.counts, fresh.counts) and np.array_equal(after.plan(0), fresh.plan(0))
    # a rebuilt vocabulary (vocab.json rewritten): a new key too
    meta = dataset.vocab_dir("v") / "vocab.json"
    meta.write_text(meta.read_text().replace('"name"', '"name" ', 1))
    assert _sampler(dataset).cache_hits["summary"] is False
    # other settings, other entries; the same settings again, a hit
    assert _sampler(dataset, sampling="uniform").cache_hits["summary"] is False
    assert _sampler(dataset).cache_hits["summary"] is True


def test_damaged_entries_are_recomputed_and_read_only_datasets_still_sample(dataset):
    good = _sampler(dataset, world=2, rank=1)
    entry = next(p for p in (dataset.vocab_dir("v") / "sampling").iterdir() if p.is_dir())
    (entry / "shard_sums.npy").write_bytes(b"\x93NUMPY garbage")
    (entry / "packing-2.owner.npy").unlink()
    again = _sampler(dataset, world=2, rank=1)
    assert again.cache_hits == {"summary": False, "packing": False}
    assert np.array_equal(again.plan(0), good.plan(0))


def test_an_unwritable_cache_location_means_no_cache_not_an_error(dataset):
    good = _sampler(dataset, world=2, rank=1, cache=False)
    (dataset.vocab_dir("v") / "sampling").write_text("a file where the cache directory would go")  # fails even for root
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = _sampler(dataset, world=2, rank=1)
    assert np.array_equal(s.plan(0), good.plan(0)) and s.cache_hits == {"summary": False, "packing": False}
    mine = [w for w in caught if "sampling cache" in str(w.message)]  # (the JIT off adds overflow warnings)
    assert len(mine) == 1 and "sampling cache not written" in str(mine[0].message)


def test_given_eligibility_arrays_are_never_cached(dataset):
    ok = eligibility(dataset, masks=("other",))
    s = RankSampler(dataset, Vocab(dataset, "v"), eligible=ok, world=2, rank=0)
    assert s.cache_hits == {} and not (dataset.vocab_dir("v") / "sampling").exists()
    same = RankSampler(dataset, Vocab(dataset, "v"), eligible=Eligibility(masks=("other",)), world=2, rank=0)
    assert np.array_equal(s.plan(0), same.plan(0))
    with pytest.raises(ValueError, match=r"eligible must be bool of shape \(3000,\)"):
        RankSampler(dataset, Vocab(dataset, "v"), eligible=ok[:5])


def test_range_reads_and_range_eligibility_are_slices_of_the_whole(dataset, tmp_path):
    whole = eligibility(dataset, masks=("dedup", "other"), holdout_fraction=0.4, split="holdout")
    rule = Eligibility(masks=("other", "dedup"), holdout_fraction=0.4, split="holdout")
    for lo, hi in ((0, 0), (0, 3000), (499, 1701), (2999, 3000)):
        assert np.array_equal(rule.of(dataset, lo, hi), whole[lo:hi])
    assert rule.settings() == Eligibility(masks=("dedup", "other"), holdout_fraction=0.4, split="holdout").settings()
    a = np.arange(10_000, dtype="<i8") * 3
    np.save(tmp_path / "a.npy", a)
    r = NpyRange(tmp_path / "a.npy")
    assert r.size == 10_000 and np.array_equal(r.read(17, 9_000), a[17:9_000]) and r.read(5, 5).shape == (0,)
    with pytest.raises(IndexError, match=r"range \[9000, 10001\) outside"):
        r.read(9_000, 10_001)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(fmt.FormatError, match="not a readable .npy file"):
        NpyRange(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match="split='test'"):
        Eligibility(split="test")
