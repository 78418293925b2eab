"""ShardStore: records by global index, lazy per-process LMDB environments, errors naming shard and key."""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from tagstream.loader.data import format as fmt
from tagstream.loader.data.store import ShardStore
from tagstream.tools.bench.loader_data import decode_index_color, index_tags
from tests.helpers.damage import put_record
from tests.helpers.datasets import NUM_TAGS, make_index_dataset
from tests.helpers.procfs import mapped_rss


@pytest.fixture()
def ds(tmp_path):
    return make_index_dataset(tmp_path / "ds", n=40, shard_size=16)


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_reads_every_record_by_global_index(ds):
    store = ShardStore(ds)
    for i in range(len(ds)):
        rec = store.read(i)
        assert rec["tags"] == index_tags(i, NUM_TAGS)
        assert rec["source"] == f"img{i}"
        assert decode_index_color(_decode(store.read_image(i))) == i
    assert store.locate(17) == (1, 1)
    with pytest.raises(IndexError):
        store.read(40)


def test_opens_only_the_shards_it_reads(ds):
    store = ShardStore(ds.root)
    assert store.open_shards == []
    store.read(20)
    store.read(31)
    assert store.open_shards == [1]
    store.close()
    assert store.open_shards == []


def _child_read(store: ShardStore, queue) -> None:
    queue.put((store.open_shards, store.read(33)["source"], store.open_shards))


def test_forked_child_opens_its_own_environment(ds):
    store = ShardStore(ds)
    store.read(0)
    assert store.open_shards == [0]
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    p = ctx.Process(target=_child_read, args=(store, queue))
    p.start()
    before, source, after = queue.get(timeout=60)
    p.join(60)
    assert p.exitcode == 0
    assert before == [] and source == "img33" and after == [2]
    assert store.open_shards == [0]  # the parent's handles are untouched


def _child_read_same_shard(store: ShardStore, queue) -> None:
    try:
        queue.put((store.read(33)["source"], ShardStore(store.dataset.root).read(34)["source"]))
    except Exception as exc:  # reported to the parent, which asserts on it
        queue.put(repr(exc))


def test_forked_child_reopens_a_shard_the_parent_holds_open(ds):
    # the parent keeps shard 2 open (a live store holds it), so the child inherits py-lmdb's
    # "already open in this process" entry for that file: the child must still open its own
    store = ShardStore(ds)
    store.read(33)
    idle = ShardStore(ds)  # another live store the child never uses keeps its inherited handle alive there
    idle.read(32)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    p = ctx.Process(target=_child_read_same_shard, args=(store, queue))
    p.start()
    result = queue.get(timeout=60)
    p.join(60)
    assert result == ("img33", "img34")
    assert store.read(35)["source"] == "img35" and idle.read(36)["source"] == "img36"  # the parent's handles still work


def test_pickles_without_handles(ds):
    store = ShardStore(ds)
    store.read(5)
    copy = pickle.loads(pickle.dumps(store))
    assert copy.open_shards == []
    assert copy.read(5) == store.read(5)


def test_missing_shard_names_it(ds):
    shutil.rmtree(ds.shard_path(1))
    store = ShardStore(ds)
    assert store.read(3)["source"] == "img3"
    with pytest.raises(fmt.FormatError, match="shard 00001 is missing"):
        store.read(20)


def _overwrite(ds, shard: int, local: int, value: bytes | None) -> None:
    """Damage one record; the manifest is rewritten to match, so only the record itself is wrong."""
    put_record(ds.root, ds.shard_names[shard], local, value)


@pytest.mark.parametrize(
    "value, message",
    [
        (b"\xc1garbage", "does not parse"),
        (fmt.pack_record(b"", [1], "x")[:-3], "does not parse"),
        (b"\x93\x01\x02\x03", "not a map"),
        (fmt.pack_record(b"", [1], "empty"), "empty image"),
        (None, "has no key 3"),
    ],
)
def test_bad_record_names_shard_and_key(ds, value, message):
    _overwrite(ds, 1, 3, value)
    store = ShardStore(ds.root)
    with pytest.raises(fmt.FormatError, match=message) as info:
        store.read_image(19)
    assert "00001" in str(info.value) and ("key 3" in str(info.value))


def test_verification_stamps_go_under_the_users_cache_dir(ds, tmp_path, monkeypatch):
    """verify_shards' stamps follow cache_dir (LoaderConfig.cache_dir, data.cache_dir): through a pickled store (a
    worker's copy) and through a real loader, none lands in the default cache; without cache_dir, the default."""
    from tagstream.loader import LoaderConfig, build_loader
    from tagstream.loader.data.store import close_all

    default = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(default))
    mine = tmp_path / "mine"
    store = pickle.loads(pickle.dumps(ShardStore(ds.root, verify=True, cache_dir=mine)))
    store.read_bytes(17)  # shard 1
    assert len(list((mine / "verified").glob("*.json"))) == 1 and not default.exists()
    config = LoaderConfig(
        dataset=str(ds.root),
        vocab="v",
        batch_size=8,
        image_size=16,
        workers=1,
        threads=1,
        prefetch=1,
        mode="eval",
        cache_dir=str(mine),
        verify_shards=True,
    )
    assert sum(len(batch[2]) for batch in build_loader(config)) == 40
    # the three shards, and the index arrays and vocabulary files the run reads (checksums.check_once)
    assert len(list((mine / "verified").glob("*.json"))) > 3 and not default.exists()
    close_all()
    ShardStore(ds.root, verify=True).read_bytes(0)
    assert len(list((default / "tagstream" / "verified").glob("*.json"))) == 1
    close_all()


def _mapped_rss(path) -> int:
    """Bytes of file `path`'s maps resident in this process."""
    name = os.path.realpath(path)
    return mapped_rss(lambda mapped: mapped == name)


@pytest.mark.parametrize("batched", [False, True])
def test_a_reader_hands_back_the_shard_pages_it_has_read(tmp_path, monkeypatch, batched):
    """Every RELEASE_EVERY records the shard pages read leave the process's RSS: `embed` over 10^6 images had
    grown its reader to 7 GB of mapped shard pages (docs/scale.md). Views already handed out stay readable."""
    import tagstream.loader.data.store as store_module

    ds = make_index_dataset(tmp_path / "big", n=600, shard_size=600)
    shard = ds.shard_path(0) / "data.mdb"

    def read_all(store):
        kept = []
        for lo in range(0, 600, 50):
            if batched:
                items, txns = store.image_buffers(np.arange(lo, lo + 50))
                kept.append((items[0], txns))
            else:
                for i in range(lo, lo + 50):
                    store.read_bytes(i)
        return kept

    monkeypatch.setattr(store_module, "RELEASE_EVERY", 10**9)
    everything = ShardStore(ds)
    read_all(everything)
    resident_all = _mapped_rss(shard)
    assert resident_all > 64 * 1024  # the pages of 600 records stay mapped without the release
    everything.close()
    store_module.close_all()
    assert _mapped_rss(shard) == 0

    monkeypatch.setattr(store_module, "RELEASE_EVERY", 100)
    store = ShardStore(ds)
    kept = read_all(store)
    assert _mapped_rss(shard) < resident_all / 3  # at most the last 100 records' pages
    assert decode_index_color(_decode(bytes(kept[0][0]) if batched else store.read_image(0))) == 0
    store_module.close_all()
