"""The DALI pipeline and its per-sample source, with a stand-in plan: indices, pixels and crops, with
both decode placements (DALI's operators, or the source decoding itself with loader/pipeline/turbo.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tagstream.loader.data.store import ShardStore
from tagstream.loader.pipeline.augment import train_params
from tagstream.loader.pipeline.plan_source import PlanSource
from tagstream.loader.pipeline.source import EvalPlan
from tagstream.tools.bench.loader_data import decode_index_color, encode_jpeg, write_dataset
from tests.helpers.datasets import make_index_dataset
from tests.helpers.pipelines import ModPlan, _epoch, _pipe, plan_source

DECODERS = ["dali", "turbo"]


def _source(decoder: str, size: int, **kw) -> PlanSource:
    """A PlanSource that leaves decoding to DALI, or decodes to size x size itself."""
    return plan_source(decode=decoder == "turbo", image_size=size, resize_size=size, **kw)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("workers", [0, 2])
def test_train_source_follows_the_plan_across_epochs(tmp_path, workers, decoder):
    ds = make_index_dataset(tmp_path / "ds", n=40, shard_size=16)
    src = _source(decoder, 16, store=ShardStore(ds), plan=ModPlan(40), train=True, length=24, seed=0, rank=0)
    pipe = _pipe(src, batch=8, size=16, workers=workers)
    for epoch in range(2):
        batches = _epoch(pipe)
        assert len(batches) == 3
        got = np.concatenate([idx for _, idx in batches])
        np.testing.assert_array_equal(got, ModPlan(40).plan(epoch, 0, 24))
        colours = [decode_index_color(img) for imgs, _ in batches for img in imgs]
        assert colours == [i % 512 for i in got]
        assert batches[0][0].shape == (8, 16, 16, 3) and batches[0][0].dtype == np.uint8


@pytest.mark.parametrize("decoder", DECODERS)
def test_base_epoch_and_position_rebase_the_first_epoch(tmp_path, decoder):
    ds = make_index_dataset(tmp_path / "ds", n=40, shard_size=16)
    src = _source(
        decoder,
        16,
        store=ShardStore(ds),
        plan=ModPlan(40),
        train=True,
        length=24,
        seed=0,
        rank=0,
        base_epoch=3,
        base_position=8,
    )
    pipe = _pipe(src, batch=8, size=16)
    first = np.concatenate([idx for _, idx in _epoch(pipe)])
    second = np.concatenate([idx for _, idx in _epoch(pipe)])
    np.testing.assert_array_equal(first, ModPlan(40).plan(3, 8, 24))
    np.testing.assert_array_equal(second, ModPlan(40).plan(4, 0, 24))


@pytest.mark.parametrize("decoder", DECODERS)
def test_eval_pads_the_last_batch_and_marks_it(tmp_path, decoder):
    ds = make_index_dataset(tmp_path / "ds", n=21, shard_size=16)
    src = _source(
        decoder,
        16,
        store=ShardStore(ds),
        plan=EvalPlan(np.arange(21, dtype=np.int64), 24),
        train=False,
        length=24,
        seed=0,
        rank=0,
    )
    batches = _epoch(_pipe(src, batch=8, size=16))
    idx = np.concatenate([i for _, i in batches])
    np.testing.assert_array_equal(idx, np.r_[np.arange(21), [-1, -1, -1]])
    colours = [decode_index_color(img) for imgs, ix in batches for img, i in zip(imgs, ix) if i >= 0]
    assert colours == list(range(21))


def _gradient(index: int, w: int, h: int) -> np.ndarray:
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return np.stack([x, y, np.full_like(x, 8 * index)], -1).astype(np.uint8)


@pytest.mark.parametrize("decoder", DECODERS)
def test_train_crops_and_flips_match_a_pillow_reference(tmp_path, decoder):
    n, size = 16, 24
    dims = [(64 + 8 * (i % 3), 48 + 8 * (i % 4)) for i in range(n)]
    records = ((encode_jpeg(_gradient(i, w, h), quality=98), [0], w, h) for i, (w, h) in enumerate(dims))
    ds = write_dataset(tmp_path / "ds", records, num_images=n, shard_size=8, num_tags=1)
    src = _source(decoder, size, store=ShardStore(ds), plan=ModPlan(n), train=True, length=16, seed=11, rank=0)
    store = ShardStore(ds)
    flips = 0
    for imgs, idx in _epoch(_pipe(src, batch=8, size=size)):
        for pos_img, index in zip(imgs, idx):
            position = int(np.flatnonzero(ModPlan(n).plan(0, 0, 16) == index)[0])
            w, h = dims[index]
            (x, y, cw, ch), flip = train_params(w, h, seed=11, epoch=0, rank=0, position=position)
            ref = Image.open(io.BytesIO(store.read_image(int(index)))).convert("RGB")
            ref = ref.crop((x, y, x + cw, y + ch)).resize((size, size), Image.BILINEAR)
            if flip:
                ref = ref.transpose(Image.FLIP_LEFT_RIGHT)
            flips += flip
            diff = np.abs(pos_img.astype(int) - np.asarray(ref, int))
            if decoder == "turbo":  # the same decoder and filter as Pillow: rounding only
                assert diff.max() <= 1, (index, diff.max())
            else:  # DALI's decoder and resampler differ from Pillow's in detail
                assert diff.mean() < 4.0, (index, diff.mean())
    assert 0 < flips < 16


ORPHAN_SCRIPT = """
import sys, time
sys.path.insert(0, sys.argv[2])
from tests.helpers.datasets import make_index_dataset
from tests.helpers.pipelines import ModPlan, _pipe, _epoch, plan_source
from tagstream.loader.data.store import ShardStore
ds = make_index_dataset(sys.argv[1], n=16, shard_size=8)
pipe = _pipe(plan_source(store=ShardStore(ds), plan=ModPlan(16), train=True, length=16, seed=0, rank=0), batch=8, size=16, workers=2)
_epoch(pipe)
print(" ".join(map(str, pipe._py_pool.pids())), flush=True)
time.sleep(120)
"""


@pytest.mark.timeout(120)
def test_workers_die_with_a_killed_parent(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    proc = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, str(tmp_path / "ds"), str(Path(__file__).parents[2])],
        stdout=subprocess.PIPE,
        text=True,
    )
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(Path(f"/proc/{p}").exists() for p in pids)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and "Z" not in _state(p) for p in pids):
        time.sleep(0.2)
    assert not any(Path(f"/proc/{p}").exists() and "Z" not in _state(p) for p in pids)


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
