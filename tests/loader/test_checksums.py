"""Everything a run trusts is covered by a checksum: the index arrays and tags.tsv by the manifest (format version
2), a vocabulary by its checksums.json, a mask by its NAME.json; checked by `tagstream verify`, by a local run with
verify_shards, and as a URL's files download. Datasets of format version 1 still read, unchecked, and verify says
so."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from tagstream.loader.data import checksums
from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.manifest import read_manifest
from tagstream.loader.data.push import push
from tagstream.loader.data.storage import Retry, StorageError
from tagstream.loader.data.vocab import Vocab
from tagstream.loader.data.writer import write_mask
from tagstream.tools.cli import main as cli
from tagstream.tools.verify.checks import verify
from tests.helpers.datasets import make_index_dataset
from tests.helpers.s3server import _moto_server, s3_server  # noqa: F401 - fixtures

FAST = Retry(attempts=2, backoff_s=0.01, max_backoff_s=0.02, timeout_s=5.0)


@pytest.fixture
def ds(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # verify_shards' stamps
    made = make_index_dataset(tmp_path / "ds", n=24, shard_size=8)
    write_mask(made.root, "odd", np.arange(24) % 2 == 1)
    return made.root


def widths_all_7(root, shard: str = "00001") -> None:
    path = fmt.index_path(root, shard, "width")
    np.save(path, np.full_like(np.load(path), 7))


def test_the_manifest_and_the_side_files_record_every_checksum(ds):
    manifest = read_manifest(ds)
    assert manifest["version"] == 2 and set(manifest["files"]) == {fmt.TAGS}
    arrays = set(fmt.INDEX_ARRAYS) | set(fmt.OPTIONAL_INDEX_ARRAYS)  # the fixture's shards have content boxes
    assert all(set(s["index"]) == arrays for s in manifest["shards"])
    files = checksums.manifest_files(manifest)
    assert all(checksums.mismatch(ds / rel, e, rel) is None for rel, e in files.items())
    assert len(files) == 3 * len(arrays) + 1
    assert set(checksums.read_sums(ds / "vocab" / "v" / checksums.VOCAB_SUMS)) == {
        "classes.tsv",
        "label_offsets.npy",
        "labels.npy",
        "report.json",
        "vocab.json",
    }
    assert checksums.read_sums(ds / "masks" / "odd.json") == checksums.entry_of_file(ds / "masks" / "odd.npy")


def test_an_index_edited_locally_fails_verify_and_a_verifying_run(ds):
    widths_all_7(ds)
    problems = [str(p) for p in verify(ds).problems]  # the record pass also sees the JPEG headers disagree
    assert (
        "shard 00001: index file 00001.width.npy does not match the manifest's sha256 "
        "(its content changed since it was written: damaged or edited)" in problems
    )
    assert Dataset(ds).index_array(1, "width")[0] == 7  # without verify_shards: unchecked, as documented
    with pytest.raises(fmt.FormatError, match=r"00001.width.npy: index file 00001.width.npy does not match"):
        Dataset(ds, verify=True).index_array(1, "width")
    assert Dataset(ds, verify=True).index_array(0, "width").shape == (8,)
    result = CliRunner().invoke(cli, ["verify", str(ds)])
    assert result.exit_code == 1 and "00001.width.npy does not match" in result.output


@pytest.mark.parametrize("victim", ["tags.tsv", "vocab/v/classes.tsv", "vocab/v/labels.npy", "masks/odd.npy"])
def test_tags_vocabulary_and_mask_edited_fail_verify_naming_them(ds, victim):
    path = ds / victim
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01  # one bit: same size, structure intact
    path.write_bytes(bytes(data))
    problems = [str(p) for p in verify(ds).problems]
    assert any(victim.split("/")[-1] in p and "sha256" in p for p in problems), problems
    checked = Dataset(ds, verify=True)
    if victim.startswith("vocab"):
        with pytest.raises(fmt.FormatError, match=f"vocabulary v: {victim.split('/')[-1]} does not match"):
            Vocab(checked, "v")
    if victim.startswith("masks"):
        with pytest.raises(fmt.FormatError, match="mask odd does not match"):
            checked.load_mask("odd")


def test_a_dataset_of_format_version_1_still_reads_and_verify_says_what_is_not_covered(ds):
    manifest = json.loads((ds / fmt.MANIFEST).read_text())
    manifest["version"] = 1
    manifest.pop("files")
    for s in manifest["shards"]:
        s.pop("index")
    (ds / fmt.MANIFEST).write_text(json.dumps(manifest))
    (ds / "vocab" / "v" / checksums.VOCAB_SUMS).unlink()
    (ds / "masks" / "odd.json").unlink()
    phash = fmt.index_path(ds, "00001", "phash")
    np.save(phash, np.full_like(np.load(phash), 7))  # not covered: unseen, as before
    checked = Dataset(ds, verify=True)
    assert checked.index_array(1, "phash")[0] == 7 and Vocab(checked, "v").num_classes > 0
    assert checked.load_mask("odd").sum() == 12
    report = verify(ds)
    assert report.ok, report.problems
    assert any("format version 1 records no checksums" in n for n in report.notes)
    assert any("vocabulary v has no checksums.json" in n for n in report.notes)
    assert any("mask odd has no odd.json" in n for n in report.notes)
    result = CliRunner().invoke(cli, ["verify", str(ds)])
    assert result.exit_code == 0 and "note: manifest format version 1" in result.output, result.output


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["shards"][0].update(index={"width": "nothex"}),
        lambda m: m["shards"][0].update(index={"../x": "0" * 64}),
        lambda m: m.update(files={"../../etc/passwd": {"bytes": 1, "sha256": "0" * 64}}),
        lambda m: m.update(files=[]),
    ],
)
def test_malformed_checksum_records_are_format_errors(ds, edit):
    manifest = json.loads((ds / fmt.MANIFEST).read_text())
    edit(manifest)
    (ds / fmt.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(fmt.FormatError, match="manifest.json: "):
        read_manifest(ds)
    assert not verify(ds).ok


@pytest.mark.parametrize(
    "key", ["index/00001.width.npy", "tags.tsv", "vocab/v/labels.npy", "vocab/v/vocab.json", "masks/odd.npy"]
)
def test_a_file_replaced_on_the_server_is_refused_at_download(s3_server, ds, tmp_path, key):  # noqa: F811
    s3_server.create_bucket("bkt")
    push(ds, "s3://bkt/ds")
    if key.endswith(".npy"):  # same dtype and shape, other values: only the checksum tells
        buf = io.BytesIO()
        original = np.load(ds / key)
        np.save(buf, np.full_like(original, 7) if original.dtype != np.bool_ else ~original)
        forged = buf.getvalue()
    else:
        forged = (ds / key).read_bytes().replace(b"tag0\t", b"tag9\t", 1).replace(b'"classes": ', b'"classes":  ', 1)
    assert forged != (ds / key).read_bytes()
    s3_server.put("bkt", f"ds/{key}", forged)
    remote = Dataset("s3://bkt/ds", cache_dir=tmp_path / "cache")
    remote.mirror.retry = FAST
    refused = rf"s3://bkt/ds/{key}: (sha256 .* does not match|object has \d+ bytes, expected \d+)"
    with pytest.raises(StorageError, match=refused):
        if key.startswith("index"):
            remote.index_array(1, "width")
        elif key == "tags.tsv":
            remote.tags  # noqa: B018 - the property fetches it
        elif key.startswith("vocab"):
            Vocab(remote, "v")
        else:
            remote.load_mask("odd")
    assert not (remote.root / key).exists()
