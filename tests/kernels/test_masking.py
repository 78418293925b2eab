"""Patch masks for MAE: the kernel against its NumPy twin, the ratio, independence across images, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from tagstream.kernels.masking import masked_count, patch_masks, patch_masks_ref
from tagstream.kernels.rng import stream_key

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # NUMBA_DISABLE_JIT=1 scalar wrap


def _masks(key, rows, ratio, patches):
    out = np.empty((len(rows), patches), np.bool_)
    patch_masks(key, np.asarray(rows, np.uint64), ratio, out)
    return out


@pytest.mark.parametrize(("ratio", "patches"), [(0.75, 16), (0.75, 196), (0.5, 9), (0.0, 4), (0.99, 4)])
def test_kernel_matches_twin_and_masks_the_ratio(ratio, patches):
    key = stream_key(7, 1, 2)
    rows = np.arange(40, dtype=np.uint64) * 3 + 5
    got = _masks(key, rows, ratio, patches)
    assert np.array_equal(got, patch_masks_ref(key, rows, ratio, patches))
    assert (got.sum(axis=1) == masked_count(patches, ratio)).all()
    assert masked_count(196, 0.75) == 147 and masked_count(4, 0.99) == 3 and masked_count(4, 0.0) == 0


def test_a_row_depends_only_on_key_and_row():
    key = stream_key(3, 0, 5)
    whole = _masks(key, range(32), 0.75, 49)
    # any subset, in any order, gives each row the same mask (a rank computes only its own slots)
    part = _masks(key, [17, 2, 30], 0.75, 49)
    assert np.array_equal(part, whole[[17, 2, 30]])
    assert np.array_equal(_masks(key, range(32), 0.75, 49), whole)  # deterministic
    assert not np.array_equal(_masks(stream_key(3, 0, 6), range(32), 0.75, 49), whole)  # another step
    assert not np.array_equal(_masks(stream_key(4, 0, 5), range(32), 0.75, 49), whole)  # another seed


def test_images_are_masked_independently():
    # 4,000 images of 16 patches at ratio 0.5: each patch masked in half of them, pairs of rows unrelated
    m = _masks(stream_key(0, 9), range(4000), 0.5, 16)
    rate = m.mean(axis=0)
    assert np.all(np.abs(rate - 0.5) < 0.04), rate
    agree = (m[0::2] == m[1::2]).mean()  # neighbouring rows agree on a patch about half the time
    assert abs(agree - 0.5) < 0.03, agree
    wide = _masks(stream_key(0, 9), range(4000), 0.75, 64)  # ~1.5e15 possible masks: no two rows alike
    assert len({r.tobytes() for r in wide}) == 4000


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="ratio"):
        masked_count(16, 1.0)
    with pytest.raises(ValueError, match="patches"):
        masked_count(0, 0.5)
    with pytest.raises(ValueError, match="must be"):
        patch_masks(stream_key(0), np.arange(3, dtype=np.uint64), 0.5, np.empty((2, 4), np.bool_))
