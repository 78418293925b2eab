"""LoaderConfig.eval_content_box: the eval centre crop inside each image's content box (the part inside
uniform borders), with both CPU decoders; the whole frame otherwise, and in datasets without the boxes."""

from __future__ import annotations

import numpy as np
import pytest

from tagstream.loader import LoaderConfig, build_loader
from tagstream.loader.pipeline import turbo
from tests.helpers.dedup_worlds import build_padded_worlds, drop_content_boxes

DECODERS = ["turbo", "dali"]


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    from tagstream.tools.vocab.build import VocabOptions, build_vocab

    root = build_padded_worlds(tmp_path_factory.mktemp("content")).train
    build_vocab(root, "v", VocabOptions())
    return root


def _images(root, **kw) -> np.ndarray:
    config = LoaderConfig(
        dataset=str(root), vocab="v", mode="eval", batch_size=8, image_size=32, workers=1, threads=1, **kw
    )
    loader = build_loader(config)
    try:
        batch = next(iter(loader))
        assert batch.indices.numpy().tolist() == list(range(8))
        return batch.images.numpy().astype(np.int16)
    finally:
        loader.close()


@pytest.mark.parametrize("decoder", DECODERS)
def test_the_eval_crop_leaves_the_bars_out(train, decoder):
    whole = _images(train, cpu_decoder=decoder)
    inside = _images(train, cpu_decoder=decoder, eval_content_box=True)
    assert whole[0, 0].max() <= 12 and whole[1, 0].min() >= 243  # image 0 black bars, image 1 white, in the crop
    assert inside[0, 0].std() > 10 and inside[1, 0].std() > 10  # inside the box: picture from the first row
    np.testing.assert_array_equal(inside[4:], whole[4:])  # unpadded images: the same crop either way


def test_a_dataset_without_boxes_is_cropped_on_the_whole_frame(train, tmp_path):
    old = drop_content_boxes(train, tmp_path / "old")
    np.testing.assert_array_equal(_images(old, eval_content_box=True), _images(old))


def test_centre_box_within_shifts_the_centre_box_into_the_content():
    plain = turbo.centre_box(256, 192, image_size=224, resize_size=256)
    shifted = turbo.centre_box_within((10, 32, 266, 224), image_size=224, resize_size=256)
    assert shifted == pytest.approx((plain[0] + 10, plain[1] + 32, plain[2] + 10, plain[3] + 32))
