"""Augmentation parameters: torchvision's RandomResizedCrop algorithm on a counter-based RNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import RandomResizedCrop

from tagstream.loader.pipeline.augment import CounterRNG, random_resized_crop, train_params


def test_counter_rng_is_a_pure_function_of_its_key():
    a = CounterRNG(1, 2, 3, 4)
    b = CounterRNG(1, 2, 3, 4)
    assert [a.next_u64() for _ in range(5)] == [b.next_u64() for _ in range(5)]
    firsts = {
        CounterRNG(s, e, r, p).next_u64() for s in range(2) for e in range(2) for r in range(2) for p in range(50)
    }
    assert len(firsts) == 400
    u = np.array([CounterRNG(0, 0, 0, p).uniform(0.0, 1.0) for p in range(4000)])
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.02
    ints = np.array([CounterRNG(0, 1, 0, p).randint(3, 7) for p in range(4000)])
    assert set(ints.tolist()) == {3, 4, 5, 6}


@pytest.mark.parametrize("size", [(500, 375), (64, 32), (1, 1), (7, 300)])
def test_windows_fit_and_follow_scale_and_ratio(size):
    width, height = size
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    for p in range(300):
        x, y, w, h = random_resized_crop(width, height, CounterRNG(5, 0, 0, p), scale=scale, ratio=ratio)
        assert 0 <= x and 0 <= y and 0 < w and 0 < h and x + w <= width and y + h <= height


def test_fallback_matches_torchvision():
    # a 1000x10 strip: no random window fits, both fall back to the centred ratio-clamped window
    img = torch.zeros(3, 10, 1000)
    i, j, h, w = RandomResizedCrop.get_params(img, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
    assert random_resized_crop(1000, 10, CounterRNG(0, 0, 0, 0)) == (j, i, w, h)
    img = torch.zeros(3, 1000, 10)
    i, j, h, w = RandomResizedCrop.get_params(img, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
    assert random_resized_crop(10, 1000, CounterRNG(0, 0, 0, 0)) == (j, i, w, h)


def test_distribution_matches_torchvision():
    torch.manual_seed(0)
    img = torch.zeros(3, 375, 500)
    ref = np.array(
        [RandomResizedCrop.get_params(img, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3]) for _ in range(3000)], float
    )
    ours = np.array([random_resized_crop(500, 375, CounterRNG(0, 0, 0, p)) for p in range(3000)], float)
    ref_area, our_area = ref[:, 2] * ref[:, 3] / (500 * 375), ours[:, 2] * ours[:, 3] / (500 * 375)
    ref_log_ratio, our_log_ratio = np.log(ref[:, 3] / ref[:, 2]), np.log(ours[:, 2] / ours[:, 3])
    assert abs(ref_area.mean() - our_area.mean()) < 0.03
    assert abs(ref_log_ratio.mean() - our_log_ratio.mean()) < 0.03
    # window centres spread uniformly over the valid positions in both
    assert abs(ref[:, 1].mean() + ref[:, 3].mean() / 2 - (ours[:, 0].mean() + ours[:, 2].mean() / 2)) < 12


def test_train_params_deterministic_and_flip_balanced():
    params = [train_params(500, 375, seed=3, epoch=1, rank=0, position=p) for p in range(2000)]
    again = [train_params(500, 375, seed=3, epoch=1, rank=0, position=p) for p in range(2000)]
    assert params == again
    other_epoch = [train_params(500, 375, seed=3, epoch=2, rank=0, position=p) for p in range(2000)]
    other_rank = [train_params(500, 375, seed=3, epoch=1, rank=1, position=p) for p in range(2000)]
    assert sum(a == b for a, b in zip(params, other_epoch)) < 20
    assert sum(a == b for a, b in zip(params, other_rank)) < 20
    flips = np.mean([f for _, f in params])
    assert abs(flips - 0.5) < 0.05


def test_bad_size_raises():
    with pytest.raises(ValueError, match="0x5"):
        random_resized_crop(0, 5, CounterRNG(0, 0, 0, 0))
