"""Batch crop windows: the kernel against its NumPy twin on random and edge-case sizes, and the
properties every window must have (inside the image, area and aspect within range unless the fallback)."""

from __future__ import annotations

import numpy as np
import pytest

from tagstream.kernels import crops

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # NUMBA_DISABLE_JIT=1 scalar wrap

SETTINGS = [  # (seed, epoch, rank, scale, ratio)
    (0, 0, 0, (0.08, 1.0), (3 / 4, 4 / 3)),
    (123, 5, 7, (0.5, 0.9), (0.2, 5.0)),
    (-1, 2, 3, (0.9, 1.0), (4 / 3, 3 / 4)),  # ratio given high-low, a negative seed
    (9, 1, 0, (1.0, 1.0), (1.0, 1.0)),  # the whole image at aspect 1: the fallback unless square
]


def _sizes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w, h = rng.integers(1, 1500, n), rng.integers(1, 1500, n)
    w[:40], h[:40] = 1, 1  # one pixel
    w[40:80], h[40:80] = rng.integers(1, 4, 40), rng.integers(200, 900, 40)  # needles: the fallback
    w[80:120], h[80:120] = rng.integers(200, 900, 40), rng.integers(1, 4, 40)
    return w.astype(np.int64), h.astype(np.int64)


def _run(w, h, positions, setting) -> tuple[np.ndarray, np.ndarray]:
    seed, epoch, rank, scale, ratio = setting
    prefix = crops.stream_prefix(seed, epoch, rank)
    sc, ra = np.array(scale, np.float64), crops.ratio_args(ratio)
    out = np.full((w.shape[0], 5), -7, np.int64)
    crops.train_windows(w, h, positions, prefix, sc, ra, out)
    return out, crops.train_windows_ref(w, h, positions, prefix, sc, ra)


@pytest.mark.parametrize("setting", SETTINGS)
def test_kernel_matches_twin(setting):
    w, h = _sizes(3000)
    positions = np.random.default_rng(1).integers(0, 10**12, w.shape[0])
    out, ref = _run(w, h, positions, setting)
    np.testing.assert_array_equal(out, ref)


def test_windows_lie_inside_the_image_and_flips_are_fair():
    w, h = _sizes(5000, seed=3)
    out, _ = _run(w, h, np.arange(w.shape[0], dtype=np.int64), SETTINGS[0])
    x, y, cw, ch, flip = out.T
    assert (x >= 0).all() and (y >= 0).all() and (cw >= 1).all() and (ch >= 1).all()
    assert (x + cw <= w).all() and (y + ch <= h).all()
    assert set(np.unique(flip)) == {0, 1} and abs(flip.mean() - 0.5) < 0.03
    big = np.minimum(w, h) >= 100  # rounding aside, a window covers 8 % to 100 % of the image
    area = cw[big] * ch[big] / (w[big] * h[big])
    assert big.sum() > 3000 and (area > 0.07).all() and (area <= 1.0).all()


def test_a_sample_depends_only_on_its_own_position():
    w, h = _sizes(200, seed=5)
    positions = np.arange(1000, 1200, dtype=np.int64)
    whole, _ = _run(w, h, positions, SETTINGS[1])
    part, _ = _run(w[10:20], h[10:20], positions[10:20], SETTINGS[1])
    np.testing.assert_array_equal(whole[10:20], part)
    other, _ = _run(w, h, positions + 1, SETTINGS[1])
    assert (other[120:] != whole[120:]).any(axis=1).mean() > 0.9  # past the edge cases, whose window is fixed


def test_empty_batch():
    out, ref = _run(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), SETTINGS[0])
    assert out.shape == ref.shape == (0, 5)


def test_keyed_kernel_matches_twin_and_the_one_prefix_kernel_per_stream():
    """A prefix per sample (a rank serving several partitions): the kernel equals its twin, and each stream's
    samples equal train_windows with that stream's one prefix."""
    w, h = _sizes(3000, seed=7)
    rng = np.random.default_rng(2)
    positions = rng.integers(0, 10**12, w.shape[0])
    partition = rng.integers(0, 5, w.shape[0])
    prefixes = crops.stream_prefixes(3, 1, partition)
    sc, ra = np.array((0.08, 1.0)), crops.ratio_args((3 / 4, 4 / 3))
    out = np.full((w.shape[0], 5), -7, np.int64)
    crops.train_windows_keyed(w, h, positions, prefixes, sc, ra, out)
    np.testing.assert_array_equal(out, crops.train_windows_ref(w, h, positions, prefixes, sc, ra))
    for p in range(5):
        sel = partition == p
        one, _ = _run(w[sel], h[sel], positions[sel], (3, 1, p, (0.08, 1.0), (3 / 4, 4 / 3)))
        np.testing.assert_array_equal(out[sel], one)
    other = np.full_like(out, -7)
    crops.train_windows_keyed(w, h, positions, crops.stream_prefixes(3, 1, partition + 1), sc, ra, other)
    assert (other[120:] != out[120:]).any(axis=1).mean() > 0.9  # the partition is part of the key


def test_stream_prefixes_are_stream_prefix_per_sample():
    partitions = np.array([4, 0, 4, 2, 0, 7], np.int64)
    want = [crops.stream_prefix(11, 3, int(p)) for p in partitions]
    assert crops.stream_prefixes(11, 3, partitions).tolist() == [int(k) for k in want]
    assert crops.stream_prefixes(11, 3, np.zeros(0, np.int64)).shape == (0,)
    with pytest.raises(ValueError, match=r"prefixes of shape \(2,\) for 3 samples"):
        crops.train_windows_ref(
            np.ones(3, np.int64),
            np.ones(3, np.int64),
            np.arange(3),
            np.zeros(2, np.uint64),
            np.array((0.08, 1.0)),
            crops.ratio_args((3 / 4, 4 / 3)),
        )
