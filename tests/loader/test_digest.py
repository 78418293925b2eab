"""index/NNNNN.digest.npy: the format's writer stores the 64-bit BLAKE2b of each image it stores; a dataset
written before the digests existed opens, checks and loads as before."""

from __future__ import annotations

import numpy as np

from tagstream.loader import LoaderConfig, build_loader
from tagstream.loader.data import ShardStore
from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tests.helpers.datasets import make_index_dataset
from tests.helpers.exact_worlds import blake2b_64, drop_digests


def test_the_writer_stores_each_images_blake2b(tmp_path):
    ds = make_index_dataset(tmp_path / "ds", n=20, shard_size=8)
    store = ShardStore(ds)
    try:
        images = [store.read_image(i) for i in range(ds.num_images)]
    finally:
        store.close()
    digests = ds.global_array("digest")
    assert digests.dtype == np.dtype("<u8") and digests.shape == (20,)
    expected = [blake2b_64(b) for b in images]
    assert digests.tolist() == expected == [fmt.image_digest(b) for b in images]
    assert ds.every_shard_has("digest")


def test_a_dataset_without_digests_opens_and_loads(tmp_path):
    new = make_index_dataset(tmp_path / "new", n=16, shard_size=8)
    old = Dataset(drop_digests(new.root, tmp_path / "old"), verify=True)  # index arrays checked against the manifest
    assert not old.has_index_array(0, "digest")
    assert old.global_array("phash").tolist() == new.global_array("phash").tolist()
    config = LoaderConfig(
        dataset=str(old.root), vocab="v", mode="eval", batch_size=8, image_size=32, workers=1, threads=1
    )
    loader = build_loader(config)
    try:
        batch = next(iter(loader))
        assert batch.indices.numpy().tolist() == list(range(8))
    finally:
        loader.close()
