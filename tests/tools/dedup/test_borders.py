"""The content box: uniform borders of any colour, on any side, through JPEG noise, are cut; photos,
flat images and content that merely touches a flat edge keep their frame."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tagstream.tools.dedup.borders import content_box
from tagstream.tools.dedup.imagehash import content_phash, phash_image
from tagstream.tools.dedup.quality import img2dataset_border
from tagstream.tools.synth.draw import photo_like


def _photo(seed: int, width: int = 120, height: int = 90) -> np.ndarray:
    return photo_like(np.random.default_rng(seed), width, height)


def _pad(a: np.ndarray, top: int, bottom: int, left: int, right: int, colour) -> np.ndarray:
    h, w = a.shape[:2]
    out = np.empty((h + top + bottom, w + left + right, 3), np.uint8)
    out[:] = colour
    out[top : top + h, left : left + w] = a
    return out


def _jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_a_photo_keeps_its_frame():
    for seed in range(5):
        a = _photo(seed)
        assert content_box(a) == (0, 0, 120, 90)


@pytest.mark.parametrize(
    "pads, colour",
    [
        ((15, 15, 0, 0), (0, 0, 0)),  # letterbox
        ((0, 0, 20, 21), (255, 255, 255)),  # pillarbox, odd pixel on the right
        ((6, 6, 9, 9), (40, 90, 200)),  # a flat frame of any colour
    ],
)
def test_uniform_borders_are_cut_exactly(pads, colour):
    top, bottom, left, right = pads
    a = _pad(_photo(1), top, bottom, left, right, colour)
    assert content_box(a) == (left, top, left + 120, top + 90)


def test_jpeg_noise_in_the_bars_moves_the_box_by_a_few_pixels_at_most():
    a = _jpeg(_pad(_photo(2, 160, 90), 35, 35, 0, 0, (0, 0, 0)), 30)
    left, top, right, bottom = content_box(a)
    assert (left, right) == (0, 160) and abs(top - 35) <= 3 and abs(bottom - 125) <= 3


def test_a_flat_strip_on_one_side_is_the_photo_not_padding():
    """A sky or backdrop on one side stays: cutting it made a crop of the photo hash over another region than
    its original. Letterboxed, only the bars go, so the copy's box is the original's whole frame."""
    a = _photo(3)
    a[:10] = 250  # the photo's own flat white top (a studio backdrop)
    assert content_box(a) == (0, 0, 120, 90)
    assert content_box(a[3:]) == (0, 0, 120, 87)  # a crop keeps its frame too
    assert content_box(_pad(a, 20, 20, 0, 0, (0, 0, 0))) == (0, 20, 120, 110)
    assert content_box(_pad(_photo(1), 0, 30, 0, 0, (128, 128, 128))) == (0, 0, 120, 120)  # one bar: not padding


def test_opposite_bars_of_other_colours_or_lengths_are_not_padding():
    a = _photo(4)
    out = _pad(a, 15, 15, 0, 0, (0, 0, 0))
    out[105:] = 255  # the bottom bar white: two flat strips, not a letterbox
    assert content_box(out) == (0, 0, 120, 120)
    assert content_box(_pad(a, 4, 30, 0, 0, (0, 0, 0))) == (0, 0, 120, 124)  # 4 px against 30 px
    assert content_box(_pad(a, 20, 22, 0, 0, (0, 0, 0))) == (0, 20, 120, 110)  # 2 px apart: rounding


def test_flat_and_nearly_flat_images_keep_their_frame():
    assert content_box(np.zeros((50, 70, 3), np.uint8)) == (0, 0, 70, 50)
    a = np.full((100, 100, 3), 200, np.uint8)
    a[45:55, 45:55] = 10  # a small dot on a flat field: not a border around a 10 px image
    assert content_box(a) == (0, 0, 100, 100)
    assert content_box(np.zeros((1, 1, 3), np.uint8)) == (0, 0, 1, 1)
    assert content_box(np.full((40, 30), 7, np.uint8)) == (0, 0, 30, 40)  # greyscale (H, W)


def test_img2dataset_borders_hash_like_their_originals():
    """The conversion's recipe (content_phash) on img2dataset's border mode at 256 and 224: the padded copy's
    hash is near its original's, the whole frame's is not."""
    rng = np.random.default_rng(0)
    for seed in range(4):
        original = Image.fromarray(_photo(seed, 500, 375))
        for size in (256, 224):
            copy = img2dataset_border(size)(original, rng)
            box, h = content_phash(copy)
            assert box[0] == 0 and box[2] == size and abs(box[3] - box[1] - round(375 * size / 500)) <= 2
            d = int(np.bitwise_count(np.uint64(h) ^ np.uint64(content_phash(original)[1])))
            whole = int(np.bitwise_count(np.uint64(phash_image(copy)) ^ np.uint64(phash_image(original))))
            assert d <= 6 < whole, (seed, size, d, whole)
