"""`tagstream inspect`: the report's numbers, --json, --plot, the CLI."""

from __future__ import annotations

import json

from click.testing import CliRunner
from PIL import Image

from tagstream.tools.cli import main
from tagstream.tools.inspection.report import SECTIONS, inspect_dataset, plot_tag_frequency


def test_report_numbers(tiny_dataset, tmp_path):
    from tagstream.tools.convert.engine import convert

    src = tiny_dataset.source(10, size=(64, 48))
    with src.open("a") as f:  # one rejected input, one untagged image
        f.write(json.dumps({"image": "images/missing.jpg"}) + "\n")
        f.write(json.dumps({"image": "images/00000.jpg", "tags": []}) + "\n")
    convert(src, tmp_path / "ds", shard_size=4)
    report = inspect_dataset(tmp_path / "ds", top=3)
    assert list(report) == list(SECTIONS)
    d = report["dataset"]
    assert (d["images"], d["shards"], d["format_version"]) == (11, 3, 2)
    assert report["image_sizes"]["width"] == {"p0": 64, "p5": 64, "p50": 64, "p95": 64, "p100": 64}
    assert report["image_sizes"]["height"]["p50"] == 48
    t = report["tags"]
    assert t["tags"] == 1 + 3 + 5 and t["untagged_images"] == 1
    assert t["tags_per_image"] == {"mean": round(30 / 11, 3), "max": 3}
    assert t["top"][0] == {"tag": "all", "count": 10}
    assert [row["count"] for row in t["top"]] == [10, 4, 3]  # mod3_0 (0, 3, 6, 9), then a count-3 tag
    assert report["rejects"]["by_reason"] == {"missing_file": 1}
    assert report["rejects"]["rejected"] == 1 and report["rejects"]["inputs"] == 12
    json.dumps(report)  # machine-readable as is


def test_size_percentiles_mixed(tiny_dataset, tmp_path):
    from tagstream.tools.convert.engine import convert

    root = tmp_path / "src"
    root.mkdir()
    lines = []
    for i, w in enumerate([40, 50, 60, 70, 200]):
        Image.new("RGB", (w, 40), (i, i, i)).save(root / f"{i}.jpg")
        lines.append(json.dumps({"image": f"{i}.jpg", "tags": ["a"]}))
    (root / "m.jsonl").write_text("\n".join(lines) + "\n")
    convert(root / "m.jsonl", tmp_path / "ds", shard_size=2)
    widths = inspect_dataset(tmp_path / "ds")["image_sizes"]["width"]
    assert widths == {"p0": 40, "p5": 40, "p50": 60, "p95": 200, "p100": 200}


def test_plot(tiny_dataset, tmp_path):
    ds = tiny_dataset(8)
    path = plot_tag_frequency(ds, tmp_path / "tags.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 100


def test_cli_inspect(tiny_dataset, tmp_path):
    ds = tiny_dataset(6, shard_size=4)
    runner = CliRunner()
    res = runner.invoke(main, ["inspect", str(ds)])
    assert res.exit_code == 0, res.output
    assert "images               6" in res.output and "all" in res.output
    res = runner.invoke(main, ["inspect", str(ds), "--json", "--top", "2", "--plot", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["dataset"]["images"] == 6 and len(report["tags"]["top"]) == 2
    assert (tmp_path / "p.png").stat().st_size > 0
    (ds / "manifest.json").write_text(json.dumps({"format": "tagstream", "version": 7}))
    res = runner.invoke(main, ["inspect", str(ds)])
    assert res.exit_code == 1 and "format version 7 is not known" in res.output
    res = runner.invoke(main, ["inspect", "--help"])
    assert "Example" in res.output and "tagstream inspect ds" in res.output
