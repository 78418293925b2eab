"""A server that stalls mid-download fails a run within one documented bound, data.storage_timeout: a download's
requests share one retry budget, and a reader waiting for the prefetcher's download of the same shard gives up
with it instead of starting its own budget over. Counted in requests at the fault proxy, not timed."""

from __future__ import annotations

import pickle

import pytest

from tagstream.loader.config import LoaderConfig
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.prefetch import ShardPrefetcher
from tagstream.loader.data.push import push
from tagstream.loader.data.retries import Retry, StorageError
from tagstream.loader.data.store import ShardStore
from tests.helpers.datasets import make_index_dataset
from tests.helpers.s3server import _moto_server, s3_server  # noqa: F401 - fixtures

URL = "s3://bkt/ds"
BOUND = 10.0  # data.storage_timeout of these tests: 5 attempts of 1.25 s, backoffs at most 3.75 s


def test_the_bound_is_the_config_value():
    assert Retry.within(150.0).bound_s == pytest.approx(150.0) and Retry.within(150.0).attempts == 5
    assert Retry.within(BOUND).timeout_s == pytest.approx(1.25)
    for bad in (0, 5.0, float("nan"), 1e9, "10"):
        with pytest.raises(ValueError, match="storage_timeout="):
            LoaderConfig(dataset="d", vocab="v", storage_timeout=bad)


@pytest.fixture
def stalled(s3_server, tmp_path):  # noqa: F811
    s3_server.create_bucket("bkt")
    ds = make_index_dataset(tmp_path / "ds", n=16, shard_size=8)  # 2 shards: the prefetcher takes both at once
    push(ds.root, URL)
    s3_server.proxy.reset_counts()
    s3_server.proxy.inject("/bkt/ds/shards/*", "stall", times=-1)  # every ranged GET of a shard: no byte, ever
    return s3_server


def test_a_stalled_download_costs_one_retry_budget_shared_by_prefetcher_and_reader(stalled, tmp_path):
    retry = Retry.within(BOUND)
    ds = Dataset(URL, cache_dir=tmp_path / "cache", retry=retry)
    fetcher = ShardPrefetcher(ds, [0, 1])
    reader = ShardStore(ds)
    with pytest.raises(StorageError, match=r"s3://bkt/ds/shards/0000[01].lmdb/data.mdb: .*(gave up|given up)"):
        reader.read_bytes(0)
    assert fetcher.wait(timeout=4 * BOUND)
    gets = stalled.proxy.counts("GET", "/bkt/ds/shards/*")
    assert gets and all(n <= retry.attempts for n in gets.values()), gets  # not 5 by the prefetcher + 5 by the reader
    assert fetcher.error is not None and not ds.mirror.shard_ready(ds.shards[0])


def test_the_reader_starts_afresh_when_nobody_gave_up_while_it_waited(stalled, tmp_path):
    """The budget is shared only with a download under way: a later read (the server back) tries again."""
    ds = Dataset(URL, cache_dir=tmp_path / "cache", retry=Retry.within(BOUND))
    with pytest.raises(StorageError, match="gave up after 5 attempts"):
        ds.ensure_shard(0)
    stalled.proxy.clear_faults()
    assert ds.ensure_shard(0) and ds.mirror.shard_ready(ds.shards[0])


def test_a_workers_store_keeps_the_runs_bound(stalled, tmp_path):
    retry = Retry.within(BOUND)
    ds = Dataset(URL, cache_dir=tmp_path / "cache", retry=retry)
    copy = pickle.loads(pickle.dumps(ShardStore(ds.root, retry=retry)))  # what a spawned worker receives
    assert copy.dataset.mirror is not None and copy.dataset.mirror.retry == retry
