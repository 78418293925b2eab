"""Damaged and hostile datasets meet the reader: a one-line FormatError/ValueError naming the file, never
a signal (SIGBUS from LMDB mapping past a truncated file), a traceback from deep inside NumPy or LMDB, or
a read outside the dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.store import ShardStore
from tagstream.loader.data.vocab import Vocab
from tests.helpers.damage import (
    corrupt_scan,
    data_file,
    flip_bytes,
    forge_size,
    rewrite_manifest,
    run_python,
    small_jpeg,
    truncate,
)
from tests.helpers.tiny import TinyDatasets


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return TinyDatasets(tmp_path_factory)(12, shard_size=5)


@pytest.fixture
def ds(pristine, tmp_path):
    """A private copy of a converted 12-image, 3-shard dataset, to damage."""
    return shutil.copytree(pristine, tmp_path / "ds")


def _read_all(root) -> str:
    return f"from tagstream.loader.data.store import ShardStore\ns = ShardStore({str(root)!r})\nfor i in range(len(s.dataset)): s.read_image(i)\n"


def test_truncated_shard_is_named_not_a_signal(ds):
    data = data_file(ds, "00001")
    truncate(data, data.stat().st_size // 2)
    done = run_python(_read_all(ds))
    assert done.returncode == 1, (done.returncode, done.stderr[-400:])  # was -7 (SIGBUS, shell rc 135)
    last = done.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("tagstream.loader.data.format.FormatError")
        and str(data) in last
        and "the manifest says" in last
    )


def test_truncated_shard_checked_before_lmdb_opens_it(ds):
    truncate(data_file(ds, "00000"), 4096)
    store = ShardStore(ds)
    assert store.read(7)["source"] == "img7"  # other shards still read
    with pytest.raises(fmt.FormatError, match=r"shard 00000 has 4096 bytes, the manifest says \d+"):
        store.read(0)
    assert 0 not in store.open_shards


@pytest.mark.parametrize(
    "offsets, message",
    [
        ((16, 4096 + 16), "shard 00002 is not an LMDB file"),  # both meta pages' magic numbers
        ((20, 4096 + 20), "LMDB cannot open shard 00002 ("),
    ],  # both format versions
)
def test_lmdb_damage_under_a_matching_manifest_is_named(ds, offsets, message):
    data = data_file(ds, "00002")
    for offset in offsets:
        flip_bytes(data, offset, 2)
    rewrite_manifest(ds, "00002")
    done = run_python(_read_all(ds))
    assert done.returncode == 1, (done.returncode, done.stderr[-400:])
    last = done.stderr.strip().splitlines()[-1]
    assert "FormatError" in last and message in last


@pytest.mark.parametrize(
    "manifest, message",
    [
        ("[]", "expected a JSON object, got a JSON list"),
        ('{"format": "tagstream", "version": 1, "images": 0, "shards": null}', "'shards' must be a list"),
        (
            '{"format": "tagstream", "version": 1, "images": 1, "shards": [{"images": 1}]}',
            "shard name None is not allowed",
        ),
        (
            '{"format": "tagstream", "version": 1, "images": 1e30, "shards": []}',
            "'images' must be a non-negative integer",
        ),
        (
            '{"format": "tagstream", "version": 1, "images": 1, "shards": [{"name": "../../x", "images": 1}]}',
            "'../../x' is not allowed",
        ),
        (
            '{"format": "tagstream", "version": 1, "images": 2, "shards": [{"name": "a", "images": 1}, {"name": "a", "images": 1}]}',
            "listed twice",
        ),
        (
            '{"format": "tagstream", "version": 1, "images": 1, "shards": [{"name": "a", "images": true}]}',
            "'images' must be",
        ),
        ('{"format": "tagstream", "version": 1, "images": 1, "shards": ["a"]}', "shard entry 0 must be an object"),
        (
            '{"format": "tagstream", "version": 1, "images": 1, "shards": [{"name": "a", "images": 1, "bytes": -1}]}',
            "'bytes' must be",
        ),
        (
            '{"format": "tagstream", "version": 1, "images": 1, "shards": [{"name": "a", "images": 1, "sha256": 5}]}',
            "'sha256' must be",
        ),
        (
            '{"format": "tagstream", "version": 1, "images": 5, "shards": [{"name": "a", "images": 1}]}',
            "its shards hold 1",
        ),
        ("\xff\xfe{", "not valid JSON"),
    ],
)
def test_malformed_manifest_is_one_format_error(tmp_path, manifest, message):
    (tmp_path / fmt.MANIFEST).write_bytes(manifest.encode("latin-1"))
    with pytest.raises(fmt.FormatError, match=message) as info:
        Dataset(tmp_path)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "wrong_length", "wrong_dtype"])
def test_damaged_index_file_is_named(ds, damage):
    path = fmt.index_path(ds, "00001", "phash")
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        truncate(path, path.stat().st_size - 9)
    elif damage == "garbage":
        path.write_bytes(b"\x93NUMPY garbage")
    elif damage == "wrong_length":
        np.save(path, np.zeros(3, "<u8"))
    else:
        np.save(path, np.zeros(5, "<f4"))
    dataset = Dataset(ds)
    assert dataset.index_array(0, "phash").shape == (5,)
    with pytest.raises(fmt.FormatError, match="00001.phash.npy") as info:
        dataset.index_array(1, "phash")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("width, height", [(100000, 48), (0, 48), (-5, 48), (64, 0), (60000, 60000)])
def test_impossible_image_size_in_the_index_is_refused(ds, width, height):
    for name, value in (("width", width), ("height", height)):
        a = np.load(fmt.index_path(ds, "00000", name))
        a[2] = value
        np.save(fmt.index_path(ds, "00000", name), a)
    dataset = Dataset(ds)
    with pytest.raises(fmt.FormatError, match=f"image 2 has width {width} and height {height}"):
        dataset.index_array(0, "height")
    assert dataset.index_array(1, "width").shape == (5,)


def test_tag_index_that_is_not_a_csr_is_refused(ds):
    off = np.load(fmt.index_path(ds, "00001", "tag_offsets"))
    off[2] = off[-1] + 100
    np.save(fmt.index_path(ds, "00001", "tag_offsets"), off)
    ids = np.load(fmt.index_path(ds, "00002", "tag_ids"))
    ids[0] = 10**6
    np.save(fmt.index_path(ds, "00002", "tag_ids"), ids)
    dataset = Dataset(ds)
    with pytest.raises(fmt.FormatError, match="shard 00001: tag_offsets is not a CSR"):
        dataset.index_array(1, "tag_ids")
    with pytest.raises(fmt.FormatError, match=r"shard 00002: tag_ids holds ids outside \[0, \d+\)"):
        dataset.index_array(2, "tag_offsets")


@pytest.mark.parametrize("name", ["v\n", "../../x", "..", ".hidden", "a/b", "", "x" * 200, "v\x1b[31m"])
def test_names_stay_inside_the_dataset(ds, tmp_path, name):
    outside = tmp_path / "x"  # what ../../x would reach from vocab/ or masks/
    (outside / "vocab.json").parent.mkdir(parents=True, exist_ok=True)
    np.save(tmp_path / "x.npy", np.zeros(12, bool))
    dataset = Dataset(ds)
    with pytest.raises(ValueError, match="name .* is not allowed"):
        Vocab(dataset, name)
    with pytest.raises(ValueError, match="mask name .* is not allowed"):
        dataset.load_mask(name)
    with pytest.raises(ValueError, match="is not allowed"):
        fmt.mask_path(ds, name)


def test_damaged_vocabulary_files_are_named(ds):
    from tagstream.tools.vocab.build import VocabOptions, build_vocab

    build_vocab(ds, "v", VocabOptions(min_count=1))
    vdir = ds / fmt.VOCAB_DIR / "v"
    meta = json.loads((vdir / "vocab.json").read_text())
    (vdir / "vocab.json").write_text("[1, 2")
    with pytest.raises(fmt.FormatError, match="vocab.json: not valid JSON"):
        Vocab(Dataset(ds), "v")
    (vdir / "vocab.json").write_text(json.dumps(meta))
    truncate(vdir / "labels.npy", 10)
    with pytest.raises(fmt.FormatError, match="labels.npy: not a readable .npy"):
        Vocab(Dataset(ds), "v")


def test_every_decode_path_refuses_an_image_bomb_header_before_allocating():
    from tagstream.loader.pipeline import turbo

    bomb = forge_size(small_jpeg(), 65500, 65500)  # 4.3 gigapixels claimed by a 2 KB file
    for call in (
        lambda: turbo.decode(bomb),
        lambda: turbo.crop_resize(bomb, (0, 0, 64, 48), 32),
        lambda: turbo.box_resize(bomb, (0.0, 0.0, 64.0, 48.0), 32),
        lambda: turbo.check(bomb),
    ):
        with pytest.raises(ValueError, match=f"65500 x 65500 pixels is over the limit of {fmt.MAX_PIXELS} pixels"):
            call()
    assert turbo.decode(forge_size(small_jpeg(), 64, 48)).shape == (48, 64, 3)  # the bound, not the forging, refuses


@pytest.mark.parametrize("damage", ["corrupt_scan", "soi_and_zeros", "truncated"])
def test_strict_check_refuses_damaged_scan_data(damage):
    from tagstream.loader.pipeline import turbo

    good = small_jpeg(256, 192)
    assert turbo.check(good) == (256, 192)
    bad = {
        "corrupt_scan": corrupt_scan(good),
        "soi_and_zeros": b"\xff\xd8" + bytes(4000),
        "truncated": good[: len(good) // 2],
    }[damage]
    with pytest.raises(ValueError, match="^JPEG "):
        turbo.check(bad)


def test_truncated_shard_under_a_rewritten_manifest_is_named_not_a_signal(ds):
    data = data_file(ds, "00001")
    truncate(data, data.stat().st_size - 4096)
    rewrite_manifest(ds, "00001")  # the size check at open cannot see it now: LMDB's own meta page can
    done = run_python(_read_all(ds))
    assert done.returncode == 1, (done.returncode, done.stderr[-400:])
    last = done.stderr.strip().splitlines()[-1]
    assert "FormatError" in last and "shard 00001 is cut short: LMDB's meta page says" in last


_TRAIN_THEN_TRUNCATE = """
import sys
from pathlib import Path
from tagstream.loader import LoaderConfig, build_loader
from tests.helpers.damage import data_file, truncate
from tests.helpers.datasets import make_index_dataset

ds = make_index_dataset(Path(sys.argv[1]) / "ds", n=64, shard_size=48)
config = LoaderConfig(dataset=str(ds.root), vocab="v", batch_size=4, image_size=16, workers=1, threads=1, prefetch=1,
                      mode="eval", cpu_decoder=sys.argv[2])
batches = iter(build_loader(config))
next(batches)
truncate(data_file(ds.root, "00000"), 8192)  # cut under the readers' maps, mid-epoch
for _ in batches:
    pass
print("no error")
"""


def test_a_shard_cut_short_after_the_store_opened_it_is_named(ds):
    code = _read_all(ds).replace(
        "for i in", "s.read_image(0)\nimport os\nos.truncate({!r}, 8192)\nfor i in".format(str(data_file(ds, "00000")))
    )
    done = run_python(code)
    assert done.returncode == 1, (done.returncode, done.stderr[-400:])
    assert "shard 00000 was cut to 8192 bytes while being read" in done.stderr.strip().splitlines()[-1]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("decoder", ["dali"])  # DALI's CPU decoder: the batch read runs in the main process
def test_a_shard_cut_short_while_the_loader_runs_is_named(tmp_path, decoder):
    """Was: SIGBUS (rc 135) in the process reading LMDB's map past the new end of the file. The store checks
    the file's size (fstat) at each read; only a truncation racing one read could still be a signal."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _TRAIN_THEN_TRUNCATE, str(tmp_path), decoder],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=str(Path(__file__).parents[2]),
    )
    assert done.returncode == 1, (done.returncode, done.stdout[-300:], done.stderr[-600:])
    last = done.stderr.strip().splitlines()[-1]
    assert "FormatError" in last and "shards/00000.lmdb/data.mdb: shard 00000" in last and "8192 bytes" in last


def test_frame_sizes_are_read_from_the_markers_by_c_and_by_the_fallback(monkeypatch):
    from tagstream.loader.data import records

    good, bomb = small_jpeg(64, 48), forge_size(small_jpeg(64, 48), 65500, 65500)
    buffers = [memoryview(good), np.frombuffer(good, np.uint8), bomb, b"\xff\xd8" + bytes(50)]
    widths, heights = np.array([64, 64, 64, 64]), np.array([48, 48, 48, 48])
    for _ in ("c", "python"):
        assert records.frame_size(good) == (64, 48) and records.frame_size(bomb) == (65500, 65500)
        assert records.first_size_mismatch(buffers[:2], widths[:2], heights[:2]) == -1
        assert records.first_size_mismatch(buffers, widths, heights) == 2
        assert records.first_size_mismatch(buffers[3:], widths[3:], heights[3:]) == 0
        with pytest.raises(ValueError, match="no frame header"):
            records.frame_size(buffers[3])
        monkeypatch.setattr(records, "_records", None)  # the extension not built: the Python walk


@pytest.mark.timeout(120)
@pytest.mark.parametrize("forged", ["bomb", "other_size"])
def test_dali_never_sees_a_header_that_disagrees_with_the_index(tmp_path, forged):
    """DALI's decoders size their output from the JPEG header: a forged 65500 x 65500 header on 2 KB was an
    allocation of ~24 GB (OOM-killed); the batch source compares every header with the index first."""
    from tagstream.loader import LoaderConfig, build_loader
    from tagstream.loader.data.store import close_all
    from tests.helpers.damage import put_record
    from tests.helpers.datasets import make_index_dataset

    ds = make_index_dataset(tmp_path / "ds", n=32, shard_size=16)
    rec = ShardStore(ds.root).read(20)
    close_all()
    w, h = int(ds.index_array(1, "width")[4]), int(ds.index_array(1, "height")[4])
    image = forge_size(small_jpeg(w, h), 65500, 65500) if forged == "bomb" else small_jpeg(w + 16, h)
    put_record(ds.root, "00001", 4, fmt.pack_record(image, rec["tags"], rec["source"]))
    config = LoaderConfig(
        dataset=str(ds.root),
        vocab="v",
        batch_size=8,
        image_size=16,
        workers=1,
        threads=1,
        prefetch=1,
        mode="eval",
        cpu_decoder="dali",
    )
    said = "65500 x 65500" if forged == "bomb" else f"{w + 16} x {h}"
    with pytest.raises(
        fmt.FormatError, match=f"shard 00001 key 4 .*cannot decode: its JPEG header says {said}, the index {w} x {h}"
    ):
        for _ in build_loader(config):
            pass


def test_verify_shards_refuses_a_shard_changed_since_conversion_and_hashes_once(tmp_path, monkeypatch):
    """data.verify_shards: a byte flipped in a local shard's records (size and meta page intact) is an error
    naming the shard before anything is read from it; a sound shard is hashed once per machine (a stamp), again
    after the file changes. Without it, the damage goes unseen (the default's cost: none)."""
    from tagstream.loader.data.store import ShardStore, close_all
    from tests.helpers.datasets import make_index_dataset

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ds = make_index_dataset(tmp_path / "ds", n=24, shard_size=12)
    hashed = []
    real = fmt.file_sha256
    monkeypatch.setattr(fmt, "file_sha256", lambda path, *a: hashed.append(str(path)) or real(path, *a))
    assert ShardStore(ds.root, verify=True).read_bytes(13) == ShardStore(ds.root).read_bytes(13)
    ShardStore(ds.root, verify=True).read_bytes(14)  # another process, the same machine: the stamp
    close_all()
    assert len(hashed) == 1 and hashed[0].endswith("00001.lmdb/data.mdb")
    path = data_file(ds.root, "00000")
    flip_bytes(path, path.stat().st_size // 2)  # inside the records: size and LMDB meta pages unchanged
    assert ShardStore(ds.root).read_bytes(0)  # the default sees nothing
    close_all()
    with pytest.raises(fmt.FormatError, match="shard 00000 does not match the manifest's sha256"):
        ShardStore(ds.root, verify=True).read_bytes(0)
    assert len(hashed) == 2
    with pytest.raises(fmt.FormatError, match="sha256"):  # a damaged shard is never stamped: checked every time
        ShardStore(ds.root, verify=True).read_bytes(1)
    assert len(hashed) == 3
    close_all()


@pytest.mark.parametrize("decoder", ["turbo", "dali"])
def test_a_loader_with_verify_shards_names_the_damaged_shard(tmp_path, monkeypatch, decoder):
    from tagstream.loader import LoaderConfig, build_loader
    from tests.helpers.datasets import make_index_dataset

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ds = make_index_dataset(tmp_path / "ds", n=32, shard_size=16)
    path = data_file(ds.root, "00001")
    flip_bytes(path, path.stat().st_size // 2)
    config = LoaderConfig(
        dataset=str(ds.root),
        vocab="v",
        batch_size=8,
        image_size=16,
        workers=1,
        threads=1,
        prefetch=1,
        mode="eval",
        cpu_decoder=decoder,
        verify_shards=True,
    )
    with pytest.raises(Exception, match="shard 00001 does not match the manifest's sha256"):
        for _ in build_loader(config):
            pass
