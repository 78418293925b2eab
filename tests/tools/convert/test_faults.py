"""`tagstream convert` against hostile inputs and a hostile machine: a FIFO as the source, symbolic links out
of an ImageFolder, byte-order marks, images changed between a crash and the rerun, a full disk, a shard
deleted from a finished dataset, damaged JPEG scan data. Each ends in a one-line error or a recorded
rejection, and nothing converted is lost."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tagstream.loader.data import format as fmt
from tagstream.loader.data.manifest import read_manifest
from tagstream.tools.cli import main
from tagstream.tools.convert.engine import ConvertRefused, convert
from tests.helpers.damage import corrupt_scan, run_python, small_jpeg


def _jsonl_source(root: Path, images: list[bytes]) -> Path:
    """hashtags.jsonl beside images/NNN.jpg, image i tagged #all and #i<i % 3>."""
    (root / "images").mkdir(parents=True)
    lines = []
    for i, data in enumerate(images):
        (root / "images" / f"{i:03d}.jpg").write_bytes(data)
        lines.append(json.dumps({"image": f"images/{i:03d}.jpg", "tags": ["#all", f"#i{i % 3}"], "id": f"img{i}"}))
    (root / "hashtags.jsonl").write_text("\n".join(lines) + "\n")
    return root / "hashtags.jsonl"


def _digests(out: Path) -> list[tuple[str, int, str]]:
    return [(s["name"], s["images"], s["sha256"]) for s in read_manifest(out)["shards"]]


def test_a_fifo_as_the_source_is_refused_not_a_hang(tmp_path):
    fifo = tmp_path / "hashtags.jsonl"
    os.mkfifo(fifo)
    code = f"from tagstream.tools.cli import main\nmain(['convert', {str(fifo)!r}, {str(tmp_path / 'out')!r}])"
    done = run_python(code, timeout=60)  # was: blocked forever reading the FIFO to fingerprint it
    assert done.returncode == 1, done.stderr[-400:]
    assert f"source {fifo} is not a regular file or a directory (a FIFO" in done.stderr.strip().splitlines()[-1]


def test_symbolic_links_out_of_an_imagefolder_are_rejected_with_a_reason(tmp_path):
    src, elsewhere = tmp_path / "src", tmp_path / "elsewhere"
    (src / "cat").mkdir(parents=True)
    (elsewhere / "dogs").mkdir(parents=True)
    (src / "cat" / "a.jpg").write_bytes(small_jpeg(seed=1))
    (elsewhere / "secret.jpg").write_bytes(small_jpeg(seed=2))
    (elsewhere / "dogs" / "d.jpg").write_bytes(small_jpeg(seed=3))
    os.symlink(elsewhere / "secret.jpg", src / "cat" / "b.jpg")  # a file outside SRC: was read and converted
    os.symlink(src / "cat" / "a.jpg", src / "cat" / "c.jpg")  # a file inside SRC: followed
    os.symlink(elsewhere / "dogs", src / "dog")  # a class folder: was skipped without a word
    out = tmp_path / "out"
    summary = convert(src, out)
    assert summary.images == 2 and summary.rejected == {"symlink": 2}
    rejects = {r["input"]: r for r in map(json.loads, (out / fmt.REJECTS).read_text().splitlines())}
    assert set(rejects) == {"cat/b.jpg", "dog"}
    assert "outside SRC" in rejects["cat/b.jpg"]["detail"] and "to a folder" in rejects["dog"]["detail"]


def test_byte_order_marks_are_not_part_of_the_first_entry(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(small_jpeg(seed=1))
    csv = tmp_path / "table.csv"
    csv.write_bytes("\ufeffimage,tags\nimages/a.jpg,sunset beach\n".encode())  # was refused: no column 'image'
    assert convert(csv, tmp_path / "from_csv").images == 1
    jsonl = tmp_path / "lines.jsonl"
    jsonl.write_bytes("\ufeff".encode() + json.dumps({"image": "images/a.jpg", "tags": ["sunset"]}).encode() + b"\n")
    summary = convert(jsonl, tmp_path / "from_jsonl")  # was: line 1 rejected, "not JSON"
    assert summary.images == 1 and summary.rejected == {}


@pytest.mark.parametrize("kind", ["jsonl", "imagefolder"])
def test_an_image_changed_between_a_crash_and_the_rerun_is_refused(tmp_path, kind):
    data = [small_jpeg(seed=i) for i in range(6)]
    if kind == "jsonl":
        src = _jsonl_source(tmp_path / "src", data)
        changed = tmp_path / "src" / "images" / "004.jpg"
    else:
        src = tmp_path / "src"
        for i, d in enumerate(data):
            (src / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
            (src / f"c{i % 2}" / f"{i}.jpg").write_bytes(d)
        changed = src / "c0" / "4.jpg"
    out = tmp_path / "out"
    convert(src, out, shard_size=2)
    (out / fmt.MANIFEST).unlink()  # as if killed before the end: shards 00000.. are committed
    st = changed.stat()
    changed.write_bytes(small_jpeg(seed=99)[: st.st_size].ljust(st.st_size, b"\0"))  # same size, other bytes
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(ConvertRefused, match="changed since this conversion started"):
        convert(src, out, shard_size=2)  # was: resumed, mixing old and new bytes


def test_a_shard_deleted_from_a_finished_dataset_is_converted_again(tmp_path):
    src = _jsonl_source(tmp_path / "src", [small_jpeg(seed=i) for i in range(7)])
    out = tmp_path / "out"
    convert(src, out, shard_size=2)
    before = _digests(out)
    shutil.rmtree(fmt.shard_path(out, "00001"))
    summary = convert(src, out, shard_size=2)  # was: "already complete"
    assert not summary.already_complete and summary.redone == ("00001",) and summary.resumed_from == 2
    assert _digests(out) == before
    res = CliRunner().invoke(main, ["convert", str(src), str(out), "--shard-size", "2", "--no-progress"])
    assert res.exit_code == 0 and "already a complete conversion" in res.output


def test_a_full_disk_is_one_line_and_the_rerun_gives_the_same_dataset(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk (no mount needed): the first shard (small images) fits, the
    second (noise) does not; the write fails as it would on a full disk, with an OSError/lmdb.Error."""
    images = [small_jpeg(64, 48, seed=i) for i in range(4)] + [small_jpeg(400, 300, seed=i) for i in range(4)]
    src = _jsonl_source(tmp_path / "src", images)
    reference = tmp_path / "reference"
    convert(src, reference, shard_size=4)
    out = tmp_path / "out"
    code = (
        "import resource, signal\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (120_000, 120_000))\n"
        "from tagstream.tools.cli import main\n"
        f"main(['convert', {str(src)!r}, {str(out)!r}, '--shard-size', '4', '--no-progress'])\n"
    )
    done = run_python(code)
    assert done.returncode == 1, done.stderr[-600:]  # was: a traceback ending in lmdb.Error / OSError
    assert "Traceback" not in done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and f"{out}: writing shard 00001 failed" in line and "rerun the same command" in line
    assert (fmt.shard_path(out, "00000") / "data.mdb").exists()  # the committed shard is kept
    summary = convert(src, out, shard_size=4)
    assert summary.resumed_from == 4 and _digests(out) == _digests(reference)


def test_a_jpeg_with_damaged_scan_data_is_rejected(tmp_path):
    good, bad = small_jpeg(256, 192, seed=1), corrupt_scan(small_jpeg(256, 192, seed=2))
    src = _jsonl_source(tmp_path / "src", [good, bad])
    summary = convert(src, tmp_path / "out")  # was: stored as is (Pillow decodes it without a word)
    assert summary.images == 1 and summary.rejected == {"corrupt": 1}
    reject = json.loads((tmp_path / "out" / fmt.REJECTS).read_text())
    assert reject["line"] == 2 and "damaged JPEG scan data: JPEG Corrupt JPEG data" in reject["detail"]
