"""Progressive resizing: the schedule's parser and rules, and the real loader changing its batch shape at the
scheduled epoch while drawing the same samples and crops as a fixed-size loader, resuming exactly across it."""

from __future__ import annotations

import numpy as np
import pytest

from tagstream.loader import build_loader
from tagstream.loader.config import LoaderConfig
from tagstream.loader.pipeline.sizes import (
    check_size,
    final_size,
    format_size_schedule,
    image_size_setting,
    parse_size_schedule,
    size_at,
)
from tests.helpers.datasets import make_index_dataset


def test_parse_format_and_size_at():
    s = parse_size_schedule("160@0, 192@2,224@4")
    assert s == ((0, 160), (2, 192), (4, 224)) and format_size_schedule(s) == "160@0,192@2,224@4"
    assert [size_at(s, e) for e in range(6)] == [160, 160, 192, 192, 224, 224]
    assert parse_size_schedule("224") == ((0, 224),) == parse_size_schedule(224)
    assert final_size(s) == 224


def test_one_stored_form_per_image_size():
    """A size or a schedule, however written, is stored one way: an int, or the normalised schedule text."""
    assert image_size_setting("224") == image_size_setting(224) == image_size_setting(" 224@0") == 224
    assert image_size_setting("160@0, 192@2") == "160@0,192@2"
    with pytest.raises(ValueError, match="data.image_size='160@1'.*must start at epoch 0"):
        image_size_setting("160@1", name="data.image_size")


@pytest.mark.parametrize("size", [7, 0, True, 16.0, "16"])
def test_a_single_size_is_a_whole_number_of_at_least_8(size):
    with pytest.raises(ValueError, match=r"image_size=.* must be a whole number of pixels >= 8"):
        check_size(size)
    with pytest.raises(ValueError, match=r"image_size=.* must be a whole number of pixels >= 8"):
        LoaderConfig(dataset="d", vocab="v", image_size=size)


@pytest.mark.parametrize(
    "text, message",
    [
        ("160@1,224@4", "must start at epoch 0"),
        ("160@0,224@4,192@4", "epochs must strictly increase"),
        ("160@0,4@2", r"sizes \[4\] are outside \[8, 4096\]"),
        ("160@0,8192@2", r"sizes \[8192\] are outside \[8, 4096\]"),
        ("160@0,big@2", "neither a size nor a schedule SIZE@EPOCH"),
        ("", "neither a size nor a schedule"),
    ],
)
def test_bad_schedules_are_refused_with_the_rule(text, message):
    with pytest.raises(ValueError, match=message):
        parse_size_schedule(text)


def test_loader_config_rules(tmp_path):
    with pytest.raises(ValueError, match="applies to mode='train' only"):
        LoaderConfig(dataset="d", vocab="v", mode="eval", size_schedule=((0, 16), (1, 24)))
    with pytest.raises(ValueError, match="must start at epoch 0"):
        LoaderConfig(dataset="d", vocab="v", size_schedule=((2, 16),))
    c = LoaderConfig(dataset="d", vocab="v", image_size=32, size_schedule=((0, 16), (1, 24)))
    assert [c.train_size(e) for e in range(3)] == [16, 24, 24]
    assert LoaderConfig(dataset="d", vocab="v", image_size=32).train_size(5) == 32


def _epochs(loader, epochs):
    out = {}
    for epoch in epochs:
        loader.set_epoch(epoch)
        out[epoch] = [(b.indices.numpy().copy(), b.images.numpy().copy()) for b in loader]
    return out


def test_batch_shape_changes_at_the_scheduled_epoch_and_resumes_exactly(tmp_path):
    root = str(make_index_dataset(tmp_path / "ds", n=32, shard_size=16).root)
    base = dict(
        dataset=root, vocab="v", batch_size=8, samples_per_epoch=16, workers=1, threads=1, seed=5, cpu_decoder="turbo"
    )
    scheduled = build_loader(LoaderConfig(**base, image_size=24, size_schedule=((0, 16), (1, 24))))
    try:
        seen = _epochs(scheduled, [0, 1])
    finally:
        scheduled.close()
    assert [img.shape[1:3] for _, img in seen[0]] == [(16, 16)] * 2
    assert [img.shape[1:3] for _, img in seen[1]] == [(24, 24)] * 2

    # the same samples and crops as a run at a fixed 24 px in that epoch: only the output size is scheduled
    fixed = build_loader(LoaderConfig(**base, image_size=24))
    try:
        same = _epochs(fixed, [1])[1]
    finally:
        fixed.close()
    for (ia, xa), (ib, xb) in zip(seen[1], same):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(xa, xb)

    # a fresh loader resumed mid-epoch after the change continues with the same shapes, samples and pixels
    resumed = build_loader(LoaderConfig(**base, image_size=24, size_schedule=((0, 16), (1, 24))))
    try:
        resumed.load_state_dict({"epoch": 1, "step": 1})
        rest = [(b.indices.numpy(), b.images.numpy()) for b in resumed]
    finally:
        resumed.close()
    assert len(rest) == 1
    np.testing.assert_array_equal(rest[0][0], seen[1][1][0])
    np.testing.assert_array_equal(rest[0][1], seen[1][1][1])
