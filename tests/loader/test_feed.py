"""The batch source (loader/pipeline/batch_source.py) against today's per-sample path: the same crop windows as
augment.train_params, the same samples, bytes and boxes as PlanSource, and the same pixels through
DALI's CPU operators; the zero-copy record reads and their errors; the GPU size bound."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest

from tagstream.kernels.crops import ratio_args, stream_prefix, train_windows
from tagstream.loader.data import format as fmt
from tagstream.loader.data.store import ShardStore
from tagstream.loader.pipeline.augment import train_params
from tagstream.loader.pipeline.batch_source import BatchSource
from tagstream.loader.pipeline.graph import build_pipeline, start
from tagstream.loader.pipeline.source import EvalPlan
from tagstream.tools.bench.loader_data import encode_jpeg, write_dataset
from tests.helpers.pipelines import ModPlan, _pipe, assert_same_epochs, batch_source, pattern_image, plan_source

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # NUMBA_DISABLE_JIT=1 scalar wrap


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    n = 44
    dims = [(40 + 9 * (i % 5), 36 + 7 * (i % 6)) for i in range(n)]
    records = ((encode_jpeg(pattern_image(i, w, h), quality=95), [i % 3], w, h) for i, (w, h) in enumerate(dims))
    return write_dataset(tmp_path_factory.mktemp("feed") / "ds", records, num_images=n, shard_size=12, num_tags=3)


@pytest.mark.parametrize(
    "seed, epoch, rank, scale, ratio", [(0, 0, 0, (0.08, 1.0), (3 / 4, 4 / 3)), (77, 3, 5, (0.3, 0.6), (0.5, 2.0))]
)
def test_kernel_windows_equal_train_params(seed, epoch, rank, scale, ratio):
    rng = np.random.default_rng(seed)
    w, h = rng.integers(1, 2000, 4000), rng.integers(1, 2000, 4000)
    w[:50] = 1
    h[50:100] = rng.integers(1, 3, 50)
    positions = rng.integers(0, 2**40, 4000)
    out = np.empty((4000, 5), np.int64)
    train_windows(w, h, positions, stream_prefix(seed, epoch, rank), np.array(scale), ratio_args(ratio), out)
    for row, a, b, p in zip(out, w.tolist(), h.tolist(), positions.tolist()):
        window, flip = train_params(a, b, seed=seed, epoch=epoch, rank=rank, position=p, scale=scale, ratio=ratio)
        assert tuple(row) == (*window, int(flip)), (a, b, p)


def _sources(ds, train: bool, **kw):
    plan = ModPlan(len(ds)) if train else EvalPlan(np.arange(len(ds) - 3, dtype=np.int64), 48)
    common = dict(
        store=ShardStore(ds), plan=plan, train=train, length=48, seed=4, rank=1, image_size=20, resize_size=24, **kw
    )
    return plan_source(**common), batch_source(batch_size=8, **common)


@pytest.mark.parametrize("train", [True, False])
def test_batches_equal_the_per_sample_source(ds, train):
    per_sample, batched = _sources(ds, train, base_epoch=2)
    for first in (0, 8, 40):
        outs = batched.batch(3, first)
        jpegs, index = outs[0], outs[1]
        for i in range(8):
            image, params = per_sample.sample(3, first + i)
            assert np.array_equal(np.array(jpegs[i]), image)
            assert index[i, 0] == params[0]
            if train:  # anchor (x, y), shape (w, h), flip
                assert tuple(outs[2][i]) + tuple(outs[3][i]) + (outs[4][i],) == tuple(params[1:])
            else:  # the float32 ROI DALI resizes: (y0, x0) .. (y1, x1)
                box = params[1:].astype(np.float32)
                assert tuple(outs[2][i]) == (box[1], box[0]) and tuple(outs[3][i]) == (box[3], box[2])


def _batched_pipe(source: BatchSource, size: int):
    return start(
        build_pipeline(
            source,
            batch_size=8,
            image_size=size,
            device="cpu",
            device_id=None,
            workers=0,
            threads=1,
            prefetch=2,
            seed=0,
            bytes_per_sample=1 << 14,
            mean=(0, 0, 0),
            std=(1, 1, 1),
        ),
        workers=0,
    )


@pytest.mark.parametrize("train", [True, False])
def test_same_pixels_through_dali_as_the_per_sample_source(ds, train):
    per_sample, batched = _sources(ds, train, base_epoch=1, base_position=16)
    reference, ours = _pipe(per_sample, batch=8, size=20, workers=2), _batched_pipe(batched, 20)
    assert_same_epochs(reference, ours)  # the rebased first epoch (4 batches), then a whole one (6)


def test_image_buffers_are_views_equal_to_read_image(ds):
    store = ShardStore(ds)
    indices = np.array([0, 13, 5, 43, 13, 24], np.int64)
    buffers, txns = store.image_buffers(indices)
    assert len(txns) == 4  # one read transaction per shard touched
    assert [bytes(b) for b in buffers] == [store.read_image(int(i)) for i in indices]
    assert all(isinstance(b, memoryview) for b in buffers)


def _rewrite(root, values: dict[int, bytes]) -> None:
    """Replace records of shard 0, and its byte size in the manifest (which readers check first)."""
    path = fmt.shard_path(root, fmt.shard_name(0))
    env = fmt.open_env(path, write=True)
    with env.begin(write=True) as txn:
        for local, value in values.items():
            txn.put(fmt.encode_key(local), value)
    env.close()
    manifest = json.loads((root / fmt.MANIFEST).read_text())
    manifest["shards"][0]["bytes"] = (path / "data.mdb").stat().st_size
    (root / fmt.MANIFEST).write_text(json.dumps(manifest))


def test_records_in_another_layout_and_bad_records(tmp_path):
    records = ((encode_jpeg(pattern_image(i, 32, 32)), [0], 32, 32) for i in range(6))
    ds = write_dataset(tmp_path / "ds", records, num_images=6, shard_size=6, num_tags=1)
    jpeg = encode_jpeg(pattern_image(9, 32, 32))
    _rewrite(
        ds.root,
        {
            1: msgpack.packb({"tags": [0], "source": "x", "image": jpeg}, use_bin_type=True),  # the image last
            2: fmt.pack_record(b"GIF89a...", [0], "x"),
            3: b"\xc1\xc1",
        },
    )
    fresh = ShardStore(ds.root)
    assert bytes(fresh.image_buffers(np.array([1]))[0][0]) == jpeg
    for index, message in ((2, "shard 00000 key 2 .*not a JPEG"), (3, "shard 00000 key 3 .*does not parse")):
        with pytest.raises(fmt.FormatError, match=message):
            fresh.image_buffers(np.array([0, index]))
    with pytest.raises(IndexError):
        fresh.image_buffers(np.array([6]))


def test_image_span():
    for size in (3, 300, 70_000):  # msgpack bin 8, bin 16, bin 32
        value = fmt.pack_record(b"\xff\xd8" + b"x" * (size - 2), [1, 2], "s")
        start, length = fmt.image_span(value)
        assert length == size and value[start : start + length] == b"\xff\xd8" + b"x" * (size - 2)
    value = fmt.pack_record(b"\xff\xd8" * 100, [], "")
    assert fmt.image_span(value[:50]) is None  # the length runs past a truncated value
    assert fmt.image_span(b"") is None and fmt.image_span(b"\x83\xa5image") is None


def test_gpu_size_bound_names_the_image(ds):
    _, batched = _sources(ds, True)
    batched.max_pixels = 40 * 36  # the smallest image passes, the others are over
    with pytest.raises(
        fmt.FormatError, match=r"shard \d+ key \d+ \(image \d+\): \d+x\d+ is more than the 1,440 pixels.*--max-side"
    ):
        batched.batch(0, 0)


def _bad_store(tmp_path):
    """Shard 0 of 8 images 32 x 32: key 1 laid out with the image last, 2 a GIF, 3 a JPEG of another size, 5 gone."""
    records = ((encode_jpeg(pattern_image(i, 32, 32)), [0], 32, 32) for i in range(8))
    ds = write_dataset(tmp_path / "ds", records, num_images=8, shard_size=8, num_tags=1)
    env = fmt.open_env(fmt.shard_path(ds.root, fmt.shard_name(0)), write=True)
    with env.begin(write=True) as txn:
        txn.delete(fmt.encode_key(5))
    env.close()
    _rewrite(
        ds.root,
        {  # and the manifest's byte size
            1: msgpack.packb(
                {"tags": [0], "source": "x", "image": encode_jpeg(pattern_image(9, 32, 32))}, use_bin_type=True
            ),
            2: fmt.pack_record(b"GIF89a...", [0], "x"),
            3: fmt.pack_record(encode_jpeg(pattern_image(3, 40, 32)), [0], "x"),
        },
    )
    return ShardStore(ds.root)


@pytest.mark.parametrize("extension", [True, False])
def test_batch_record_reads_in_c_and_in_python_agree(tmp_path, monkeypatch, extension):
    """records.images: the same views, and the same first bad sample and reason, from the C extension and
    from the Python it falls back to."""
    from tagstream.loader.data import records

    store = _bad_store(tmp_path)
    if not extension:
        monkeypatch.setattr(records, "_records", None)
    elif records._records is None:
        pytest.fail("loader/data/_records.c did not build: `make test` installs a C compiler")
    txn = store._env(0).begin(buffers=True)

    def read(local, width=32, wrap=None):
        n = len(local)
        return records.images(
            [txn.get], np.zeros(n, np.int64), np.array(local), np.full(n, width), np.full(n, 32), wrap
        )

    views, k, why = read([0, 4, 7, 4])
    assert (k, why) == (-1, 0)
    assert [bytes(v) for v in views] == [store.read_image(i) for i in (0, 4, 7, 4)]
    assert all(isinstance(v, memoryview) for v in views)
    assert [bytes(v) for v in read([6, 0], wrap=bytes)[0]] == [store.read_image(6), store.read_image(0)]  # wrapped
    for local, reason in (
        ([0, 5], (1, records.NO_KEY)),
        ([4, 1], (1, records.OTHER_LAYOUT)),
        ([2], (0, records.NOT_JPEG)),
        ([0, 7, 3, 5], (2, records.FRAME_DIFFERS)),
    ):
        assert read(local) == (None, *reason), local
    assert read([3], width=40)[1:] == (-1, 0)  # the index's size is what is checked
    with pytest.raises(ValueError, match="int64"):
        records.images(
            [txn.get], np.zeros(2, np.int64), np.zeros(3, np.int64), np.zeros(2, np.int64), np.zeros(2, np.int64), None
        )
    txn.abort()


@pytest.mark.parametrize("extension", [True, False])
def test_image_buffers_name_each_bad_record(tmp_path, monkeypatch, extension):
    """The batch read stops at a bad record and the store names it (shard, key, image) like read_image does;
    a record in another layout is parsed and its image copied instead."""
    from tagstream.loader.data import records

    store = _bad_store(tmp_path)
    if not extension:
        monkeypatch.setattr(records, "_records", None)
    tensors, txns = store.image_buffers(np.array([0, 1, 4]), wrap=bytes)
    assert tensors == [store.read_image(0), store.read_image(1), store.read_image(4)] and len(txns) == 1
    for index, message in (
        (2, "key 2 \\(image 2\\): image is not a JPEG"),
        (5, "has no key 5 \\(image 5\\)"),
        (3, "key 3 \\(image 3\\): cannot decode: its JPEG header says 40 x 32, the index 32 x 32"),
    ):
        with pytest.raises(fmt.FormatError, match=f"shard 00000 {message}"):
            store.image_buffers(np.array([0, 4, index, 7]))


def test_c_and_python_reads_agree_on_damaged_records(monkeypatch):
    """2,000 records cut short, with flipped bytes, forged lengths or random bytes: the C reader never reads
    out of bounds (no crash) and stops at the same samples for the same reasons as the Python one."""
    import random

    from tagstream.loader.data import records
    from tests.helpers.damage import small_jpeg

    rng = random.Random(0)
    good = fmt.pack_record(small_jpeg(40, 30), [1], "s")
    values = []
    for i in range(2000):
        v = bytearray(good)
        if i % 4 == 0:
            v = v[: rng.randrange(len(v) + 1)]
        elif i % 4 == 1:
            for _ in range(rng.randrange(1, 8)):
                v[rng.randrange(len(v))] = rng.randrange(256)
        elif i % 4 == 2:
            v[8:12] = rng.randbytes(4)  # the image's length
        else:
            v = bytearray(rng.randbytes(rng.randrange(64)))
        values.append(bytes(v))
    get = [lambda key: values[int.from_bytes(key, "big")]]
    one = np.zeros(1, np.int64)
    outcomes = set()
    for i in range(len(values)):
        args = (get, one, np.array([i]), np.array([40]), np.array([30]), bytes)
        c = records.images(*args)
        with monkeypatch.context() as m:
            m.setattr(records, "_records", None)
            assert records.images(*args) == c, i
        outcomes.add(c[2])
    assert outcomes == {0, records.OTHER_LAYOUT, records.NOT_JPEG, records.FRAME_DIFFERS}
