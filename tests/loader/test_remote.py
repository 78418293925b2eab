"""Datasets on object storage: push, the local mirror, per-rank shard downloads, faults, versions, cache limit.
Against moto's S3 server on 127.0.0.1 behind the fault proxy (tests/helpers/s3server.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tagstream.loader import build_loader
from tagstream.loader.config import LoaderConfig
from tagstream.loader.data import cache
from tagstream.loader.data import format as fmt
from tagstream.loader.data.cache import Mirror
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.prefetch import shards_of_ranges
from tagstream.loader.data.push import files_to_push, push
from tagstream.loader.data.storage import Retry, StorageError
from tagstream.loader.data.store import ShardStore
from tagstream.loader.data.vocab import stage_vocab
from tagstream.loader.data.writer import mask_outputs, stage_mask
from tests.helpers.datasets import make_index_dataset
from tests.helpers.s3server import SECRET, _moto_server, s3_server  # noqa: F401 - fixtures

URL = "s3://bkt/ds"
FAST = Retry(attempts=3, backoff_s=0.01, max_backoff_s=0.05, timeout_s=2.0)
SHARDS = "/bkt/ds/shards/*/data.mdb"


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Dataset:
    """48 images in 6 shards of 8, identity vocabulary "v", and a mask."""
    ds = make_index_dataset(tmp_path_factory.mktemp("remote") / "ds", n=48, shard_size=8)
    from tagstream.loader.data.writer import write_mask

    write_mask(ds.root, "odd", np.arange(48) % 2 == 1)
    return Dataset(ds.root)


@pytest.fixture
def pushed(s3_server, local):  # noqa: F811
    s3_server.create_bucket("bkt")
    push(local.root, URL)
    s3_server.proxy.reset_counts()
    return s3_server


def data_puts(server) -> dict[str, int]:
    """PUTs per dataset file (the push ledger, rewritten by every push, left out)."""
    return {p: n for p, n in server.proxy.counts("PUT", "/bkt/ds/*").items() if p != "/bkt/ds/push.json"}


def shard_gets(server) -> dict[str, int]:
    return {p.split("/")[-2][: -len(".lmdb")]: n for p, n in server.proxy.counts("GET", SHARDS).items()}


def test_push_uploads_the_manifest_last(s3_server, local):  # noqa: F811
    s3_server.create_bucket("bkt")
    s3_server.proxy.reset_counts()
    report = push(local.root, URL)
    writes = [(m, p) for m, p in s3_server.proxy.log if m in ("PUT", "POST", "DELETE")]
    assert writes[0] == ("PUT", "/bkt/ds/push.json") and writes[-1] == ("PUT", "/bkt/ds/manifest.json")
    put = {p for m, p in writes if m == "PUT"}
    assert {f"/bkt/ds/shards/{n}.lmdb/data.mdb" for n in local.shard_names} <= put
    assert "/bkt/ds/vocab/v/labels.npy" in put and "/bkt/ds/masks/odd.npy" in put
    assert not any("sampling/" in p or p.endswith(".lock") or "/.convert/" in p for p in put)
    assert report.files == len(put - {"/bkt/ds/push.json"}) and report.bytes > sum(s["bytes"] for s in local.shards)
    with pytest.raises(ValueError, match="push needs a URL"):
        push(local.root, "/some/dir")
    s3_server.proxy.reset_counts()
    push(local.root, URL)  # again: the ledger widened, then the old manifest deleted before any upload
    writes = [(m, p) for m, p in s3_server.proxy.log if m in ("PUT", "POST", "DELETE")]
    assert writes[:2] == [("PUT", "/bkt/ds/push.json"), ("DELETE", "/bkt/ds/manifest.json")]


def test_mirror_reads_every_record_and_reuses_its_cache(pushed, local, tmp_path):
    ds = Dataset(URL, cache_dir=tmp_path)
    assert ds.source == URL and ds.mirror is not None and ds.root.parent == tmp_path
    assert ds.vocab_names() == ["v"] and ds.mask_names() == ["odd"] and len(ds) == 48
    assert np.array_equal(ds.load_mask("odd"), local.load_mask("odd"))
    assert np.array_equal(ds.index_array(2, "width"), local.index_array(2, "width"))
    assert shard_gets(pushed) == {}  # nothing downloaded until a record is read
    remote, here = ShardStore(ds), ShardStore(local)
    assert all(remote.read_bytes(i) == here.read_bytes(i) for i in range(48))
    assert shard_gets(pushed) == {n: 1 for n in local.shard_names}
    again = ShardStore(Dataset(URL, cache_dir=tmp_path))  # a resumed run: verified shards are reused
    assert all(again.read_bytes(i) == here.read_bytes(i) for i in range(48))
    assert shard_gets(pushed) == {n: 1 for n in local.shard_names}
    assert pushed.proxy.counts("GET", "/bkt/ds/manifest.json") == {"/bkt/ds/manifest.json": 2}


def test_missing_dataset_and_missing_vocabulary(pushed, tmp_path):
    with pytest.raises(fmt.FormatError, match=r"s3://bkt/nothing: no manifest.json"):
        Dataset("s3://bkt/nothing", cache_dir=tmp_path)
    from tagstream.loader.data.vocab import Vocab

    with pytest.raises(ValueError, match="no vocabulary 'w'.*vocabularies here: v"):
        Vocab(Dataset(URL, cache_dir=tmp_path), "w")


def test_drop_500_and_corruption_are_survived(pushed, local, tmp_path):
    pushed.proxy.inject("/bkt/ds/shards/00001.lmdb/data.mdb", "drop", times=1)
    pushed.proxy.inject("/bkt/ds/shards/00002.lmdb/data.mdb", "500", times=2)
    pushed.proxy.inject("/bkt/ds/shards/00003.lmdb/data.mdb", "corrupt", times=1)
    ds = Dataset(URL, cache_dir=tmp_path)
    ds.mirror.retry = FAST
    remote, here = ShardStore(ds), ShardStore(local)
    assert all(remote.read_bytes(i) == here.read_bytes(i) for i in range(48))
    faulted = {kind for kind, _ in pushed.proxy.faulted}
    assert faulted == {"drop", "500", "corrupt"}


def test_a_corrupt_object_is_named_and_never_used(pushed, tmp_path):
    pushed.proxy.inject("/bkt/ds/shards/00004.lmdb/data.mdb", "corrupt", times=-1)
    ds = Dataset(URL, cache_dir=tmp_path)
    ds.mirror.retry = FAST
    store = ShardStore(ds)
    with pytest.raises(StorageError, match=r"s3://bkt/ds/shards/00004.lmdb/data.mdb: .*(sha256|checksum)") as err:
        store.read_bytes(int(ds.shard_starts[4]))
    assert SECRET not in str(err.value)
    assert not (ds.shard_path(4) / "data.mdb").exists() and not ds.mirror.shard_ready(ds.shards[4])


def test_a_gone_server_is_a_clear_error_not_a_hang(pushed, tmp_path):
    ds = Dataset(URL, cache_dir=tmp_path)
    ds.mirror.retry = Retry(attempts=2, backoff_s=0.01, max_backoff_s=0.01, timeout_s=1.0)
    pushed.proxy.go_away()
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=r"s3://bkt/ds/shards/00000.lmdb/data.mdb: .*gave up after 2 attempts"):
        ShardStore(ds).read_bytes(0)
    assert time.monotonic() - t0 < 60  # bounded by attempts x timeout; generous for a loaded machine


def test_a_new_version_at_the_url_replaces_the_old(pushed, local, tmp_path, tmp_path_factory):
    old = Dataset(URL, cache_dir=tmp_path)
    ShardStore(old).read_bytes(0)
    assert old.mirror.shard_ready(old.shards[0])
    smaller = make_index_dataset(tmp_path_factory.mktemp("v2") / "ds", n=20, shard_size=8)
    push(smaller.root, URL)
    new = Dataset(URL, cache_dir=tmp_path)
    assert new.root == old.root and len(new) == 20 and new.mask_names() == []
    assert not (new.root / fmt.MASKS_DIR / "odd.npy").exists()  # removed at the source: dropped here
    here = ShardStore(Dataset(smaller.root))
    assert all(ShardStore(new).read_bytes(i) == here.read_bytes(i) for i in range(20))


def test_cache_limit_evicts_unused_shards_and_refuses_what_cannot_fit(pushed, tmp_path):
    ds = Dataset(URL, cache_dir=tmp_path)
    for k in range(6):
        ds.ensure_shard(k)
    size = ds.shards[0]["bytes"]
    assert all(s["bytes"] == size for s in ds.shards)  # equal shards keep the arithmetic below simple
    with pytest.raises(ValueError, match=r"data.cache_limit=\d+ bytes is less than the \d+ bytes of the 3 shards"):
        ds.mirror.make_room(ds.shards[:3], limit=2 * size)
    other = Mirror.attach(ds.root)  # another loader on this machine reads shard 5
    other.use([ds.shards[5]])
    evicted = ds.mirror.make_room(ds.shards[:2], limit=3 * size)
    assert (
        len(evicted) == 3 and "00005" not in evicted and set(ds.mirror.cached_shards()) == {"00000", "00001", "00005"}
    )
    with pytest.raises(ValueError, match="in use by other processes"):
        ds.mirror.make_room(ds.shards[:2], limit=2 * size)
    other.release()
    assert ds.mirror.make_room(ds.shards[:2], limit=2 * size) == ["00005"]


def _cfg(dataset: str, **kw) -> LoaderConfig:
    base = dict(
        dataset=dataset, vocab="v", batch_size=8, image_size=16, workers=1, threads=1, prefetch=2, masks=("odd",)
    )
    return LoaderConfig(**{**base, **kw})


def test_each_rank_downloads_only_its_shards_and_sees_the_local_batches(pushed, local, tmp_path):
    fetched: dict[int, set[str]] = {}
    for rank in (0, 1):
        cache = tmp_path / f"node{rank}"  # one machine per rank: nothing shared
        remote = build_loader(_cfg(URL, cache_dir=str(cache)), rank, 2)
        here = build_loader(_cfg(str(local.root)), rank, 2)
        try:
            assert remote._fetch.wait(timeout=120)
            owned = {local.shard_names[k] for k in shards_of_ranges(local.shard_starts, remote.sampler.owned_ranges())}
            assert set(remote.dataset.mirror.cached_shards()) == owned
            fetched[rank] = owned
            for epoch in (0, 1):
                remote.set_epoch(epoch)
                here.set_epoch(epoch)
                for a, b in zip(remote, here, strict=True):
                    assert np.array_equal(a.indices.numpy(), b.indices.numpy())
                    assert np.array_equal(a.images.numpy(), b.images.numpy())
        finally:
            remote.close()
            here.close()
    assert fetched[0] and fetched[1] and fetched[0] != fetched[1]
    assert fetched[0] | fetched[1] == set(local.shard_names)
    expected = {n: (n in fetched[0]) + (n in fetched[1]) for n in local.shard_names}
    assert shard_gets(pushed) == expected  # a shard reaches a rank only when that rank samples from it


def test_a_worker_forked_during_a_download_never_holds_its_lock(tmp_path):
    """A loader worker forked while a thread downloads a shard must not keep the shard's lock once the
    download is over (with flock it did: the inherited descriptor held it, and the other workers hung)."""
    import os
    import signal
    import subprocess
    import sys

    path = tmp_path / "00000.get"
    with cache._exclusive(path):
        child = os.fork()
        if child == 0:  # a worker: lives on with whatever it inherited
            time.sleep(30)
            os._exit(0)
    try:
        probe = "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)"
        taken = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    assert taken.returncode == 0, taken.stderr  # another process gets the lock while the forked child lives


def test_push_leaves_out_the_staging_folders_of_builds_in_progress(tmp_path):
    """A vocabulary and a mask being built (vocab/.NAME.PID.tmp/, masks/.NAME.PID.tmp/) are not the dataset's yet."""
    ds = make_index_dataset(tmp_path / "ds", n=16, shard_size=8)
    before = files_to_push(ds.root)
    assert any(rel.startswith(f"{fmt.VOCAB_DIR}/") for rel in before)
    with pytest.raises(RuntimeError, match="stop the builds"):
        with (
            stage_vocab(Dataset(ds.root), "w", replace=False) as vocab,
            stage_mask(ds.root, "m", outputs=mask_outputs("m")) as mask,
        ):
            (vocab / "classes.tsv").write_text("half written")
            for name in mask_outputs("m"):
                (mask / name).write_bytes(b"half written")
            assert {vocab.parent.name, mask.parent.name} == {fmt.VOCAB_DIR, fmt.MASKS_DIR}
            assert files_to_push(ds.root) == before
            raise RuntimeError("stop the builds")


def test_a_rerun_push_uploads_only_what_is_not_there_already(s3_server, tmp_path):  # noqa: F811
    """An interrupted push run again uploads only what did not finish; a file changed here, or an object
    replaced there, is uploaded again; the result reads like a fresh push."""
    from tagstream.loader.data import storage

    s3_server.create_bucket("bkt")
    ds = make_index_dataset(tmp_path / "ds", n=40, shard_size=8)  # 5 shards + index, vocabulary, tags
    rels = files_to_push(ds.root)
    real_put, uploads = storage.put, []

    def failing_put(src, url, retry=storage.DEFAULT_RETRY):
        if len(uploads) == 4:
            raise StorageError(f"{url}: connection reset (injected)")
        real_put(src, url, retry)
        uploads.append(url)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(storage, "put", failing_put)
        with pytest.raises(StorageError, match="injected"):
            push(ds.root, URL, threads=1)
    assert not storage.exists(f"{URL}/manifest.json")  # unfinished: no manifest
    s3_server.proxy.reset_counts()
    report = push(ds.root, URL, threads=1)
    shard_puts = data_puts(s3_server)
    assert report.skipped == 4 and report.files == len(rels) + 1
    assert len(shard_puts) == len(rels) - 4 + 1  # the rest and the manifest
    assert all(f"/bkt/ds/{u.split('/bkt/ds/', 1)[1]}" not in shard_puts for u in uploads)

    s3_server.proxy.reset_counts()
    assert push(ds.root, URL).skipped == len(rels)  # nothing changed: only the manifest again
    assert set(data_puts(s3_server)) == {"/bkt/ds/manifest.json"}

    tags = ds.root / fmt.TAGS
    tags.write_text(tags.read_text())  # rewritten here (new mtime)
    s3_server.put("bkt", f"ds/{rels[0]}", b"replaced behind our back")  # and a shard replaced there
    s3_server.proxy.reset_counts()
    report = push(ds.root, URL)
    assert set(data_puts(s3_server)) == {f"/bkt/ds/{rels[0]}", f"/bkt/ds/{fmt.TAGS}", "/bkt/ds/manifest.json"}
    remote = Dataset(URL, cache_dir=tmp_path / "cache")
    here = ShardStore(Dataset(ds.root))
    assert all(ShardStore(remote).read_bytes(i) == here.read_bytes(i) for i in range(40))
