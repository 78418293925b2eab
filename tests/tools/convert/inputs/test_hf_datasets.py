"""Hugging Face datasets as inputs, written by the real `datasets` library: Parquet with the Image feature's bytes
embedded or paths only, a hub-style folder with two splits, save_to_disk folders; each converts to the records
of the JSON-lines conversion of the same photos and tags, from any position, killed or in parts."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner

from tagstream.loader.data.writer import ShardWriter
from tagstream.tools.cli import main
from tagstream.tools.convert.engine import ConvertRefused, convert
from tagstream.tools.convert.inputs import Source, table_rows
from tagstream.tools.convert.launch import run_conversion
from tagstream.tools.convert.merge import merge
from tagstream.tools.convert.parts import PartSpec, convert_part
from tests.helpers.records import dataset_records, same_dataset_parts
from tests.helpers.webdataset import image_bytes

PHOTOS = 12
TRAIN = 8  # photos 0..7 are the train split, 8..11 the test split

datasets.disable_progress_bars()


def _tags(i: int) -> list[str]:
    return ["all", f"mod3_{i % 3}"] + (["odd"] if i % 2 else [])


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """photos/<i>.<ext> and the JSON lines naming them with their tags, whole and per split."""
    root = tmp_path_factory.mktemp("photos")
    for i in range(PHOTOS):
        ext, data = image_bytes(i)
        (root / f"{i}.{ext}").write_bytes(data)
    for name, ids in (("all", range(PHOTOS)), ("train", range(TRAIN)), ("test", range(TRAIN, PHOTOS))):
        lines = [json.dumps({"image": _name(root, i), "tags": _tags(i)}) for i in ids]
        (root / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _name(root: Path, i: int) -> str:
    return next(p.name for p in root.iterdir() if p.stem == str(i))


@pytest.fixture(scope="module")
def expected(photos, tmp_path_factory) -> dict[str, list]:
    out = tmp_path_factory.mktemp("jsonl")
    return {name: dataset_records(_convert(photos / f"{name}.jsonl", out / name)) for name in ("all", "train", "test")}


def _convert(src, out, **options) -> Path:
    convert(src, out, shard_size=5, **options)
    return out


def _embedded(photos: Path, ids=range(PHOTOS), column: str = "image") -> datasets.Dataset:
    cells = [{"bytes": (photos / _name(photos, i)).read_bytes(), "path": _name(photos, i)} for i in ids]
    table = datasets.Dataset.from_dict({column: cells, "tags": [_tags(i) for i in ids]})
    return table.cast_column(column, datasets.Image())


def test_embedded_bytes_found_by_the_image_feature(photos, expected, tmp_path):
    _embedded(photos, column="picture").to_parquet(str(tmp_path / "hub.parquet"))  # not --image-column's 'image'
    out = _convert(tmp_path / "hub.parquet", tmp_path / "ds")
    assert dataset_records(out) == expected["all"]
    rows = [r[2] for r in dataset_records(out)]
    assert rows[:2] == ["0.png", "1.jpg"]  # the source id: the Image feature's stored path, as JSON lines' default


def test_path_only_structs_resolve_against_image_root(photos, expected, tmp_path, monkeypatch):
    names = [_name(photos, i) for i in range(PHOTOS)]
    monkeypatch.chdir(photos)  # datasets sizes the files it is given by name
    table = datasets.Dataset.from_dict({"image": names, "tags": [_tags(i) for i in range(PHOTOS)]})
    table.cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "paths.parquet"))
    assert (
        dataset_records(_convert(tmp_path / "paths.parquet", tmp_path / "ds", image_root=str(photos)))
        == (expected["all"])
    )
    # without the root the paths are the table's folder's: each a missing file named by its path, not the struct;
    # with every input rejected the conversion is refused (issue 24), the rejects written for reading
    with pytest.raises(ConvertRefused, match=rf"every one of the {PHOTOS} inputs .* \(missing_file {PHOTOS}\)"):
        convert(tmp_path / "paths.parquet", tmp_path / "ds2")
    first = json.loads((tmp_path / "ds2" / "rejects.jsonl").read_text().splitlines()[0])
    assert first["image"] == str(tmp_path / "0.png") and "bytes" not in first["input"]


def _hub_folder(photos: Path, root: Path) -> Path:
    """data/train-0000i-of-00002.parquet and data/test-00000-of-00001.parquet, as push_to_hub lays them out."""
    (root / "data").mkdir(parents=True)
    (root / "README.md").write_text("---\nconfigs:\n- config_name: default\n---\n")
    train = _embedded(photos, range(TRAIN))
    for i in range(2):
        train.shard(2, i, contiguous=True).to_parquet(str(root / "data" / f"train-{i:05d}-of-00002.parquet"))
    _embedded(photos, range(TRAIN, PHOTOS)).to_parquet(str(root / "data" / "test-00000-of-00001.parquet"))
    return root


def test_a_hub_folder_with_two_splits(photos, expected, tmp_path):
    hub = _hub_folder(photos, tmp_path / "repo")
    out = _convert(hub, tmp_path / "train")
    assert dataset_records(out) == expected["train"]
    assert json.loads((out / "manifest.json").read_text())["source"]["format"] == "hf-hub"
    res = CliRunner().invoke(main, ["convert", str(hub), str(tmp_path / "test"), "--split", "test", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert dataset_records(tmp_path / "test") == expected["test"]
    res = CliRunner().invoke(main, ["convert", str(hub), str(tmp_path / "x"), "--split", "validation"])
    assert res.exit_code == 1 and "Error: " in res.output and "Traceback" not in res.output
    assert "no Parquet file of split 'validation'; splits found: test, train (choose one with --split)" in res.output


def test_save_to_disk_folders(photos, expected, tmp_path):
    _embedded(photos).save_to_disk(str(tmp_path / "saved"), num_shards=3)
    assert dataset_records(_convert(tmp_path / "saved", tmp_path / "ds")) == expected["all"]
    splits = datasets.DatasetDict(
        {"train": _embedded(photos, range(TRAIN)), "test": _embedded(photos, range(TRAIN, PHOTOS))}
    )
    splits.save_to_disk(str(tmp_path / "dict"))
    assert dataset_records(_convert(tmp_path / "dict", tmp_path / "t", split="test")) == expected["test"]
    with pytest.raises(ValueError, match="no split 'dev' in this DatasetDict; splits: train, test"):
        Source(tmp_path / "dict", split="dev").scan()


@pytest.mark.parametrize("kind", ["parquet", "saved"])
def test_every_start_and_parts_give_the_same_items(photos, tmp_path, kind):
    table = _embedded(photos)
    if kind == "parquet":
        table.to_parquet(str(tmp_path / "t.parquet"), batch_size=5)  # row groups of 5: starts inside and between
        src = tmp_path / "t.parquet"
    else:
        table.save_to_disk(str(tmp_path / "t"), num_shards=2)
        src = tmp_path / "t"
    source = Source(src)
    count, _ = source.scan()
    every = [(i.pos, i.line, i.tags, i.source, i.data) for i in source.items()]
    assert count == PHOTOS and [e[0] for e in every] == list(range(PHOTOS))
    for start in range(count + 1):
        assert [(i.pos, i.line, i.tags, i.source, i.data) for i in source.items(start)] == every[start:]
    run_conversion(src, tmp_path / "ds", parts=3, shard_size=2)
    for i in (2, 0, 1):
        convert_part(src, tmp_path / "ds", PartSpec(i, 3), shard_size=2)
    merge(tmp_path / "ds")
    one = _convert(src, tmp_path / "one")
    assert dataset_records(tmp_path / "ds") == dataset_records(one)


def _killed_child(src: str, out: str, at: int) -> None:
    """A conversion that SIGKILLs itself before writing its at-th record."""
    real, count = ShardWriter.add, [0]

    def add(self, *args, **kwargs):
        if count[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        count[0] += 1
        real(self, *args, **kwargs)

    ShardWriter.add = add
    convert(src, out, shard_size=5)
    os._exit(0)


def test_killed_at_any_record_resumes_to_the_same_dataset(photos, expected, tmp_path):
    _embedded(photos).save_to_disk(str(tmp_path / "saved"), num_shards=2)
    reference = _convert(tmp_path / "saved", tmp_path / "ref")
    for at in (0, 4, 6, 11):
        out = tmp_path / f"k{at}"
        proc = mp.get_context("fork").Process(target=_killed_child, args=(str(tmp_path / "saved"), str(out), at))
        proc.start()
        proc.join(60)
        assert proc.exitcode == -signal.SIGKILL
        _convert(tmp_path / "saved", out)
        assert dataset_records(out) == expected["all"]
        assert same_dataset_parts(out) == same_dataset_parts(reference)


def test_an_oversized_cell_is_rejected_uncopied_and_a_damaged_stream_after_its_rows(photos, tmp_path, monkeypatch):
    sizes = [len((photos / _name(photos, i)).read_bytes()) for i in range(PHOTOS)]
    limit = sorted(sizes)[PHOTOS // 2]
    monkeypatch.setattr(table_rows, "CELL_LIMIT", limit)
    _embedded(photos).to_parquet(str(tmp_path / "t.parquet"))
    items = list(Source(tmp_path / "t.parquet").items())
    big = [i.pos for i in items if i.reason == "file_too_large"]
    assert big == [i for i in range(PHOTOS) if sizes[i] > limit] and big
    assert all(f"over {limit}" in items[p].error and items[p].data is None for p in big)
    monkeypatch.undo()
    _embedded(photos).save_to_disk(str(tmp_path / "saved"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    source = Source(tmp_path / "saved")
    count, _ = source.scan()
    got = list(source.items())
    assert len(got) == count and got[-1].reason == "damaged_file" and "not a readable Arrow stream" in got[-1].error
    assert all(i.error is None for i in got[:-1])
    assert [i.pos for i in source.items(count - 1)] == [count - 1]
