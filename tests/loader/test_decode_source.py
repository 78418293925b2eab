"""The CPU path's batch decoder (loader/pipeline/decode_source.py) against its per-sample reference (PlanSource
decoding in its workers): the same samples and pixels, call by call and through DALI's worker processes; the
continuous stream across epochs, through the pipeline and through the loader; errors naming the image; pickling
for spawned workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tagstream.loader import build_loader
from tagstream.loader.config import LoaderConfig
from tagstream.loader.data import format as fmt
from tagstream.loader.data.store import ShardStore
from tagstream.loader.pipeline.decode_source import DecodedBatchSource
from tagstream.loader.pipeline.graph import stop
from tagstream.loader.pipeline.source import EvalPlan, SourceSettings
from tagstream.tools.bench.loader_data import encode_jpeg, write_dataset
from tests.helpers.damage import put_record
from tests.helpers.datasets import make_index_dataset
from tests.helpers.pipelines import ModPlan, _epoch, _pipe, assert_same_epochs, pattern_image, plan_source

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # NUMBA_DISABLE_JIT=1 scalar wrap

B = 8


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    n = 44  # sizes from 40x36 to 112x71: some crops reach a reduced DCT scale at output size 20
    dims = [(40 + 18 * (i % 5), 36 + 7 * (i % 6)) for i in range(n)]
    records = ((encode_jpeg(pattern_image(i, w, h), quality=95), [i % 3], w, h) for i, (w, h) in enumerate(dims))
    return write_dataset(tmp_path_factory.mktemp("decode") / "ds", records, num_images=n, shard_size=12, num_tags=3)


def _settings(ds, train: bool, **kw) -> dict:
    plan = ModPlan(len(ds)) if train else EvalPlan(np.arange(len(ds) - 3, dtype=np.int64), 48)
    return dict(store=ShardStore(ds), plan=plan, train=train, length=48, seed=4, rank=1, image_size=20, **kw)


def _decoded(*, continuous: bool = False, dct: bool = False, **settings) -> DecodedBatchSource:
    return DecodedBatchSource(SourceSettings(**settings), batch_size=B, dct_scaling=dct, continuous=continuous)


@pytest.mark.parametrize("dct", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_batches_equal_the_per_sample_decoder(ds, train, dct):
    common = _settings(ds, train, base_epoch=2, content_box=not train and dct)
    reference = plan_source(decode=True, **common)
    reference.dct_scaling = dct
    ours = _decoded(dct=dct, **common)
    padded = 0
    for first in (0, 8, 40):  # eval: positions 41-47 are padding (index -1)
        images, index = ours.batch(3, first)
        assert images.shape == (B, 20, 20, 3) and images.dtype == np.uint8 and index.shape == (B, 1)
        for i in range(B):
            image, want = reference.sample(3, first + i)
            assert index[i, 0] == want[0]
            np.testing.assert_array_equal(images[i], image)
            padded += int(want[0] < 0)
    assert padded == (0 if train else 7)


@pytest.mark.parametrize("train", [True, False])
def test_same_pixels_through_dali_workers_as_the_per_sample_decoder(ds, train):
    common = _settings(ds, train, base_epoch=1, base_position=16)
    reference = _pipe(plan_source(decode=True, **common), batch=B, size=20, workers=2)
    ours = _pipe(_decoded(**common), batch=B, size=20, workers=2)
    assert_same_epochs(reference, ours)  # the rebased first epoch (4 batches), then a whole one (6)


def test_a_continuous_stream_runs_on_into_the_next_epochs(ds):
    """Resumed at position 16 of epoch 1: its 4 remaining batches, then epochs 2 and 3 whole, in one DALI epoch."""
    common = _settings(ds, True, base_epoch=1, base_position=16)
    reference = _pipe(plan_source(decode=True, **common), batch=B, size=20, workers=2)
    want = [batch for _ in range(3) for batch in _epoch(reference)]
    stop(reference)
    assert len(want) == 4 + 6 + 6
    ours = _pipe(_decoded(continuous=True, **common), batch=B, size=20, workers=2)
    for images_a, index_a in want:
        images_b, index_b = ours.run()  # never a StopIteration at an epoch's end
        np.testing.assert_array_equal(index_a, np.array(index_b.as_tensor()).reshape(-1))
        np.testing.assert_array_equal(images_a, np.array(images_b.as_tensor()))
    stop(ours)


def test_a_source_pickles_for_spawned_workers(ds):
    source = _decoded(**_settings(ds, True))
    again = pickle.loads(pickle.dumps(source))
    for a, b in zip(source.batch(0, 8), again.batch(0, 8)):
        np.testing.assert_array_equal(a, b)


def test_a_corrupt_image_is_named(tmp_path):
    good = encode_jpeg(pattern_image(0, 64, 48), quality=90)
    records = ((good, [0], 64, 48) for _ in range(16))
    ds = write_dataset(tmp_path / "ds", records, num_images=16, shard_size=8, num_tags=1)
    put_record(ds.root, fmt.shard_name(1), 3, fmt.pack_record(good[: len(good) // 2], [0], "cut"))
    plan = EvalPlan(np.arange(16, dtype=np.int64), 16)  # the manifest was rewritten: read it again
    source = _decoded(**_settings(ds, False) | {"store": ShardStore(ds.root), "plan": plan, "length": 16})
    source.batch(0, 0)  # shard 0: whole
    with pytest.raises(fmt.FormatError, match="shard 00001 key 3 .*cannot decode: JPEG"):
        source.batch(0, 8)


def _config(root: str, **kw) -> LoaderConfig:
    base = dict(dataset=root, vocab="v", batch_size=8, image_size=16, workers=2, threads=1, prefetch=2, seed=3)
    return LoaderConfig(**(base | kw))


def _epoch_of(loader, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    loader.set_epoch(epoch)
    batches = [(b.indices.numpy(), b.images.numpy()) for b in loader]
    return np.concatenate([i for i, _ in batches]), np.concatenate([x for _, x in batches])


@pytest.mark.parametrize("decoder", ["turbo", "dali"])
def test_the_loader_keeps_one_pipeline_across_epochs_and_serves_each_epoch_as_a_fresh_one(tmp_path, decoder):
    root = str(make_index_dataset(tmp_path / "ds", n=40, shard_size=16).root)
    loader = build_loader(_config(root, cpu_decoder=decoder))
    first = _epoch_of(loader, 0)
    pipe = loader._pipe
    epochs = [first] + [_epoch_of(loader, e) for e in (1, 2)]
    assert loader._pipe is pipe  # the same pipeline went on into epochs 1 and 2
    for e, (indices, images) in enumerate(epochs):
        fresh = build_loader(_config(root, cpu_decoder=decoder))
        want = _epoch_of(fresh, e)
        fresh.close()
        np.testing.assert_array_equal(indices, want[0])
        np.testing.assert_array_equal(images, want[1])
    assert not np.array_equal(epochs[1][1], epochs[2][1])
    skipped = _epoch_of(loader, 4)  # not the epoch the stream stands at: a new pipeline from epoch 4's start
    assert loader._pipe is not pipe
    fresh = build_loader(_config(root, cpu_decoder=decoder))
    np.testing.assert_array_equal(skipped[1], _epoch_of(fresh, 4)[1])
    fresh.close()
    loader.close()
