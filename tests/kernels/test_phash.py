"""kernels/phash.py and tools/dedup/imagehash.py: the 64-bit DCT perceptual hash and its Pillow-side recipe."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tagstream.kernels.phash import HASH_SIDE, dct_hash, hamming
from tagstream.tools.dedup.imagehash import gray32, phash_image
from tagstream.tools.synth.draw import photo_like


def hashes(gray: np.ndarray) -> np.ndarray:
    out = np.zeros(gray.shape[0], np.uint64)
    dct_hash(gray, out)
    return out


def test_hamming_matches_a_bit_count():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**64, 200, dtype=np.uint64)
    b = rng.integers(0, 2**64, 200, dtype=np.uint64)
    want = [bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b)]
    np.testing.assert_array_equal(hamming(a, b), want)
    assert hamming(a[:1], a[:1])[0] == 0 and hamming(np.uint64(0), np.uint64(2**64 - 1)) == 64


def test_hash_is_invariant_to_contrast_and_offset():
    rng = np.random.default_rng(1)
    gray = rng.uniform(0, 255, (5, HASH_SIDE, HASH_SIDE)).astype(np.float32)
    h = hashes(gray)
    np.testing.assert_array_equal(hashes(gray * np.float32(0.7) + np.float32(20)), h)


def test_half_the_ac_bits_are_set_and_distinct_images_differ_in_about_half():
    rng = np.random.default_rng(2)
    gray = rng.uniform(0, 255, (50, HASH_SIDE, HASH_SIDE)).astype(np.float32)
    h = hashes(gray)
    ac = h & np.uint64(2**63 - 1)  # bit 63 is the DC coefficient
    np.testing.assert_array_equal(np.bitwise_count(ac), 31)  # 31 of the 63 AC coefficients exceed their median
    d = hamming(h[:, None], h[None, :])[np.triu_indices(50, 1)]
    assert 28 < d.mean() < 36


def test_near_copies_are_close_and_distinct_photos_far():
    rng = np.random.default_rng(3)
    imgs = [Image.fromarray(photo_like(rng, 160, 120)) for _ in range(6)]
    h = np.array([phash_image(im) for im in imgs], np.uint64)
    near = np.array([phash_image(im.resize((240, 180), Image.Resampling.BILINEAR)) for im in imgs], np.uint64)
    assert hamming(h, near).max() <= 4
    assert hamming(h[:, None], h[None, :])[np.triu_indices(6, 1)].min() > 10


def test_gray32_is_a_32x32_float_luma():
    img = Image.new("RGB", (100, 70), (200, 100, 50))
    g = gray32(img)
    assert g.shape == (HASH_SIDE, HASH_SIDE) and g.dtype == np.float32
    assert np.allclose(g, np.asarray(img.convert("L"))[0, 0])


def test_phash_image_equals_the_array_path_and_fits_64_bits():
    img = Image.fromarray(photo_like(np.random.default_rng(4), 64, 48))
    assert phash_image(img) == int(hashes(gray32(img)[None])[0]) and 0 <= phash_image(img) < 2**64


@pytest.mark.parametrize("shape, out_len", [((2, 16, 16), 2), ((2, 32, 32), 3), ((32, 32), 1)])
def test_bad_shapes_are_refused(shape, out_len):
    with pytest.raises(ValueError, match="shape"):
        dct_hash(np.zeros(shape, np.float32), np.zeros(out_len, np.uint64))


def test_empty_batch():
    out = np.zeros(0, np.uint64)
    dct_hash(np.zeros((0, HASH_SIDE, HASH_SIDE), np.float32), out)
    assert out.size == 0
