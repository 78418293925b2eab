"""`tagstream convert`: round trips from each input format, rejects, determinism, refusals, the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.tools.cli import main
from tagstream.tools.convert.engine import ConvertRefused, convert
from tagstream.tools.dedup.imagehash import phash_image
from tests.helpers.convert_inputs import MIXED_OPTS, jpeg, make_mixed_source


def read_back(root: Path) -> list[dict]:
    """Every record of a dataset, in global index order, with tag texts and its index entries."""

    ds = Dataset(root)
    names = [t for _, t, _ in ds.tags]
    rows = []
    for k, shard in enumerate(ds.shards):
        env = fmt.open_env(ds.shard_path(k))
        with env.begin() as txn:
            recs = [fmt.unpack_record(v) for _, v in txn.cursor()]
        env.close()
        off, ids = ds.index_array(k, "tag_offsets"), ds.index_array(k, "tag_ids")
        assert len(recs) == shard["images"]
        for i, rec in enumerate(recs):
            assert list(ids[off[i] : off[i + 1]]) == rec["tags"]
            rows.append(
                {
                    "image": rec["image"],
                    "tags": [names[t] for t in rec["tags"]],
                    "source": rec["source"],
                    "width": int(ds.index_array(k, "width")[i]),
                    "height": int(ds.index_array(k, "height")[i]),
                    "phash": int(ds.index_array(k, "phash")[i]),
                }
            )
    return rows


def same_pixels(a: bytes, b: bytes) -> bool:
    return np.array_equal(np.asarray(Image.open(io.BytesIO(a))), np.asarray(Image.open(io.BytesIO(b))))


def rejects(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / fmt.REJECTS).read_text().splitlines()]


def test_roundtrip_jsonl(tiny_dataset, tmp_path):
    src = tiny_dataset.source(12)
    summary = convert(src, tmp_path / "ds", shard_size=5)
    assert (summary.images, summary.shards, summary.inputs, summary.rejected) == (12, 3, 12, {})
    ds = Dataset(tmp_path / "ds")
    assert [s["images"] for s in ds.shards] == [5, 5, 2]
    rows = read_back(tmp_path / "ds")
    for i, row in enumerate(rows):
        data = (src.parent / "images" / f"{i:05d}.jpg").read_bytes()
        assert same_pixels(row["image"], data)  # the baseline JPEG's own coefficients, with restart markers
        assert sorted(row["tags"]) == sorted(tiny_dataset.tags(i))
        assert row["source"] == f"img{i}"
        assert (row["width"], row["height"]) == (64, 48)
        img = Image.open(io.BytesIO(row["image"]))
        assert tiny_dataset.index_of(np.asarray(img)) == i
        assert row["phash"] == phash_image(img)
    # tag ids in order of first appearance; counts = images carrying the tag
    assert ds.tags[:3] == [(0, "all", 12), (1, "mod3_0", 4), (2, "mod5_0", 3)]
    assert sum(c for _, _, c in ds.tags) == 36
    assert rejects(tmp_path / "ds") == []


def test_roundtrip_imagefolder(tmp_path):
    src = tmp_path / "src"
    for cls, n in (("Cats", 3), ("#dogs", 2)):
        (src / cls).mkdir(parents=True)
        for i in range(n):
            (src / cls / f"{i}.jpg").write_bytes(jpeg((40 * i, 100, 0)))
    (src / "Cats" / "nested").mkdir()
    (src / "Cats" / "nested" / "x.jpg").write_bytes(jpeg((1, 2, 3)))
    (src / "Cats" / ".hidden.jpg").write_bytes(b"ignored")
    (src / "README.txt").write_text("not inside a class folder")
    summary = convert(src, tmp_path / "ds", shard_size=4)
    rows = read_back(tmp_path / "ds")
    expected_sources = ["#dogs/0.jpg", "#dogs/1.jpg", "Cats/0.jpg", "Cats/1.jpg", "Cats/2.jpg", "Cats/nested/x.jpg"]
    assert [r["source"] for r in rows] == expected_sources
    assert [r["tags"] for r in rows] == [["dogs"]] * 2 + [["cats"]] * 4
    assert all(same_pixels(r["image"], (src / r["source"]).read_bytes()) for r in rows)
    assert summary.rejected == {"bad_metadata": 1}
    (rej,) = rejects(tmp_path / "ds")
    assert rej["input"] == "README.txt" and "class folder" in rej["detail"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_roundtrip_csv(tmp_path, suffix):
    sep = "\t" if suffix == ".tsv" else ","
    (tmp_path / "im").mkdir()
    for i in range(3):
        (tmp_path / "im" / f"{i}.jpg").write_bytes(jpeg((i * 50, 0, 0)))
    rows = [
        ["id", "image", "tags", "caption"],
        ["a", "im/0.jpg", "#Beach #sunset", "lovely #Sea"],
        ["b", "im/1.jpg", "beach;sea", ""],
        ["c", "im/2.jpg", "", ""],
        ["d", "", "x", ""],
        ["e", "im/0.jpg"],
    ]
    text = "\n".join(sep.join(r) for r in rows) + "\n"
    (tmp_path / f"meta{suffix}").write_text(text)
    summary = convert(tmp_path / f"meta{suffix}", tmp_path / "ds", shard_size=10)
    got = read_back(tmp_path / "ds")
    assert [(r["source"], sorted(r["tags"])) for r in got] == [
        ("a", ["beach", "sea", "sunset"]),
        ("b", ["beach", "sea"]),
        ("c", []),
    ]
    assert summary.rejected == {"bad_metadata": 2}
    assert [r["line"] for r in rejects(tmp_path / "ds")] == [5, 6]


def test_csv_without_image_column_is_refused(tmp_path):
    (tmp_path / "m.csv").write_text("path,tags\na.jpg,x\n")
    with pytest.raises(ValueError, match="no image column 'image'.*path, tags"):
        convert(tmp_path / "m.csv", tmp_path / "ds")


def test_jsonl_captions_and_unreadable_lines(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg((0, 0, 0)))
    lines = [
        json.dumps({"image": "a.jpg", "caption": "Sunset at the #Beach #beach with #日本"}),
        json.dumps({"image": "a.jpg", "tags": ["#x"], "caption": "and #y"}),
        "",  # blank lines are not inputs
        "{not json",
        json.dumps(["image", "a.jpg"]),
        json.dumps({"tags": ["x"]}),
        json.dumps({"image": "a.jpg", "tags": "x"}),
        json.dumps({"image": "a.jpg", "caption": 5}),
        json.dumps({"image": "a.jpg", "id": [1]}),
        '{"image": "a.jpg", "tags": ["\\udcff"]}',
    ]
    data = ("\n".join(lines) + "\n").encode() + b'{"image": "a.jpg", "tags": ["\xff\xfe"]}\n'
    (tmp_path / "m.jsonl").write_bytes(data)
    summary = convert(tmp_path / "m.jsonl", tmp_path / "ds")
    got = read_back(tmp_path / "ds")
    assert [sorted(r["tags"]) for r in got] == [["beach", "日本"], ["x", "y"]]
    assert summary.inputs == 10 and summary.rejected == {"bad_metadata": 8}
    rej = rejects(tmp_path / "ds")
    assert [r["line"] for r in rej] == [4, 5, 6, 7, 8, 9, 10, 11]
    assert rej[0]["input"] == "{not json" and "not JSON" in rej[0]["detail"]
    assert all(r["reason"] == "bad_metadata" and r["detail"] for r in rej)


def test_every_rejection_kind_recorded(tmp_path):
    src = make_mixed_source(tmp_path / "src")
    summary = convert(src, tmp_path / "ds", shard_size=2, image_options=MIXED_OPTS)
    expected = {
        "bad_metadata": 1,
        "missing_file": 1,
        "empty_file": 1,
        "file_too_large": 1,
        "not_an_image": 1,
        "truncated": 1,
        "corrupt": 1,
        "too_small": 1,
        "decompression_bomb": 1,
    }
    assert summary.rejected == expected
    assert summary.images == 4
    assert summary.reencoded == {"images": 3, "png": 1, "oversize": 1, "progressive_jpeg": 1}
    rej = rejects(tmp_path / "ds")
    assert sorted(r["reason"] for r in rej) == sorted(expected)
    for r in rej:
        assert set(r) == {"line", "input", "image", "reason", "detail"}
        if r["reason"] != "bad_metadata":
            assert r["image"].endswith(json.loads(r["input"])["image"])
    rows = read_back(tmp_path / "ds")
    assert [r["source"] for r in rows] == ["good0.jpg", "good.png", "big.jpg", "prog.jpg"]
    assert (rows[2]["width"], rows[2]["height"]) == (128, 85)
    manifest = json.loads((tmp_path / "ds" / fmt.MANIFEST).read_text())
    assert manifest["rejected"] == 9 and manifest["rejects_by_reason"] == expected


def test_workers_do_not_change_a_byte(tmp_path):
    src = make_mixed_source(tmp_path / "src")
    convert(src, tmp_path / "w1", shard_size=3, image_options=MIXED_OPTS, workers=1)
    convert(src, tmp_path / "w2", shard_size=3, image_options=MIXED_OPTS, workers=2)
    for name in (fmt.MANIFEST, fmt.TAGS, fmt.REJECTS):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name
    for f in sorted((tmp_path / "w1" / fmt.INDEX_DIR).iterdir()):
        assert f.read_bytes() == (tmp_path / "w2" / fmt.INDEX_DIR / f.name).read_bytes()


def test_no_image_accepted(tmp_path):
    """Every input rejected: refused (issue 24), the rejects kept for reading, no manifest (no dataset)."""
    (tmp_path / "m.jsonl").write_text('{"image": "none.jpg"}\nbad\n')
    with pytest.raises(ConvertRefused, match=r"every one of the 2 inputs .* \(bad_metadata 1, missing_file 1\)"):
        convert(tmp_path / "m.jsonl", tmp_path / "ds")
    assert len((tmp_path / "ds" / "rejects.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "ds" / "manifest.json").exists()


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_rerun_on_finished_dataset_changes_nothing(tiny_dataset, tmp_path):
    src = tiny_dataset.source(6)
    convert(src, tmp_path / "ds", shard_size=4)
    before = snapshot(tmp_path / "ds")
    again = convert(src, tmp_path / "ds", shard_size=4, workers=2)
    assert again.already_complete and again.processed == 0 and again.images == 6
    assert snapshot(tmp_path / "ds") == before


def test_refusals(tiny_dataset, tmp_path):
    src = tiny_dataset.source(4)
    convert(src, tmp_path / "ds", shard_size=4)
    other = tiny_dataset.source(4)
    with pytest.raises(ConvertRefused, match="holds a conversion of"):
        convert(other, tmp_path / "ds", shard_size=4)
    with pytest.raises(ConvertRefused, match="shard_size: 4 then, 2 now"):
        convert(src, tmp_path / "ds", shard_size=2)
    with src.open("a") as f:
        f.write(json.dumps({"image": "images/00000.jpg"}) + "\n")
    with pytest.raises(ConvertRefused, match="changed since"):
        convert(src, tmp_path / "ds", shard_size=4)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConvertRefused, match="not empty"):
        convert(other, tmp_path / "busy")
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]


def test_bad_arguments(tiny_dataset, tmp_path):
    src = tiny_dataset.source(1)
    with pytest.raises(ValueError, match="unknown input format 'xml'; allowed: auto, imagefolder, jsonl, csv"):
        convert(src, tmp_path / "ds", format="xml")
    with pytest.raises(ValueError, match="shard_size"):
        convert(src, tmp_path / "ds", shard_size=0)
    with pytest.raises(ValueError, match="needs a directory"):
        convert(src, tmp_path / "ds", format="imagefolder")
    (tmp_path / "m.txt").write_text("")
    with pytest.raises(ValueError, match="cannot tell the format"):
        convert(tmp_path / "m.txt", tmp_path / "ds")


def test_cli_convert(tiny_dataset, tmp_path):
    src = tiny_dataset.source(5)
    runner = CliRunner()
    out = tmp_path / "ds"
    res = runner.invoke(main, ["convert", str(src), str(out), "--shard-size", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "images    5 in 3 shards" in res.output and "rejected  0" in res.output
    res = runner.invoke(main, ["convert", str(src), str(out), "--shard-size", "2", "--no-progress"])
    assert res.exit_code == 0 and "nothing to do" in res.output
    res = runner.invoke(main, ["convert", str(src), str(out), "--shard-size", "3", "--no-progress"])
    assert res.exit_code == 1 and "other options" in res.output
    res = runner.invoke(main, ["convert", "--help"])
    assert res.exit_code == 0 and "Example" in res.output and "tagstream convert" in res.output


def test_cli_restart_interval(tiny_dataset, tmp_path):
    """0 stores baseline JPEGs byte for byte; a value other than 0, 'rows' or a count is refused by name."""
    src = tiny_dataset.source(3)
    runner = CliRunner()
    res = runner.invoke(main, ["convert", str(src), str(tmp_path / "ds"), "--restart-interval", "0", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert [r["image"] for r in read_back(tmp_path / "ds")] == [
        (src.parent / "images" / f"{i:05d}.jpg").read_bytes() for i in range(3)
    ]
    res = runner.invoke(main, ["convert", str(src), str(tmp_path / "r"), "--restart-interval", "rows", "--no-progress"])
    assert res.exit_code == 0 and all(b"\xff\xdd" in r["image"] for r in read_back(tmp_path / "r"))
    res = runner.invoke(main, ["convert", str(src), str(tmp_path / "x"), "--restart-interval", "cols"])
    assert res.exit_code == 2 and "'cols' is not 0, 'rows' or an integer" in res.output


def test_out_inside_imagefolder_refused(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "0.jpg").write_bytes(jpeg((0, 0, 0)))
    with pytest.raises(ValueError, match="inside the ImageFolder SRC"):
        convert(tmp_path, tmp_path / "ds")


def test_dead_worker_named_not_hung():
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from tagstream.tools.convert.inputs import Item
    from tagstream.tools.convert.pool import _batch_result

    future: Future = Future()
    future.set_exception(BrokenProcessPool("gone"))
    batch = [Item(0, 7, "x", "a.jpg", (), "a"), Item(1, 9, "y", "b.jpg", (), "b")]
    with pytest.raises(RuntimeError, match="input lines 7..9"):
        _batch_result(batch, future)


def test_odd_sources(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ConvertRefused, match="empty.jsonl yields no input"):  # issue 24: no input is an error
        convert(tmp_path / "empty.jsonl", tmp_path / "d1")
    (tmp_path / "header.csv").write_text("image,tags\n")
    with pytest.raises(ConvertRefused, match="header.csv yields no input"):
        convert(tmp_path / "header.csv", tmp_path / "d2")
    assert not (tmp_path / "d1").exists() and not (tmp_path / "d2").exists()
    (tmp_path / "a.jpg").write_bytes(jpeg((9, 9, 9)))
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")  # stat fails with ELOOP
    big = "x" * 200_000  # over the csv module's field limit
    data = b"image,tags\na.jpg,ok\nb\xff.jpg,bad\n" + f'a.jpg,"{big}"\n'.encode() + b"loop.jpg,t\na.jpg,end\n"
    (tmp_path / "odd.csv").write_bytes(data)
    summary = convert(tmp_path / "odd.csv", tmp_path / "d3")
    assert summary.images == 2
    assert summary.rejected == {"bad_metadata": 2, "unreadable_file": 1}
    assert [r["line"] for r in rejects(tmp_path / "d3")] == [3, 4, 5]


def test_concurrent_convert_refused(tiny_dataset, tmp_path):
    import fcntl

    src = tiny_dataset.source(2)
    out = tmp_path / "ds"
    (out / ".convert").mkdir(parents=True)
    with open(out / ".convert" / "lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ConvertRefused, match="another `tagstream convert` is writing"):
            convert(src, out)
    assert convert(src, out).images == 2


def test_damaged_state_files(tiny_dataset, tmp_path):
    src = tiny_dataset.source(4)
    out = tmp_path / "ds"
    convert(src, out, shard_size=2)
    reference = (out / fmt.MANIFEST).read_bytes()
    (out / fmt.MANIFEST).unlink()
    (out / ".convert" / "00001.json").write_text("{garbage")
    assert convert(src, out, shard_size=2).resumed_from == 2  # shard 1 redone
    assert (out / fmt.MANIFEST).read_bytes() == reference
    (out / ".convert" / "state.json").write_text("{garbage")
    with pytest.raises(ConvertRefused, match="unreadable"):
        convert(src, out, shard_size=2)
