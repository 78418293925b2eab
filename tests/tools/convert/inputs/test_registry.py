"""The input kinds' one variation point: every registered kind declares its name, options dataclass and detection,
its options reach it typed from the command line, --help groups them per kind, and no input module imports
back up the tree."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tagstream.tools.cli import main
from tagstream.tools.convert.inputs import (
    FORMATS,
    INPUT_KINDS,
    CsvOptions,
    InputKind,
    KindOptions,
    Source,
    TarOptions,
    detect_format,
)
from tests.helpers.webdataset import image_bytes

INPUTS = Path(__file__).resolve().parents[4] / "tools" / "convert" / "inputs"


def test_every_kind_declares_its_name_options_and_source():
    assert FORMATS == ("auto", *INPUT_KINDS)
    for name, kind in INPUT_KINDS.items():
        assert issubclass(kind, InputKind) and kind.name == name and kind.title
        assert issubclass(kind.options_type, KindOptions) and dataclasses.is_dataclass(kind.options_type)
        assert kind.options_type.__dataclass_params__.frozen, f"{name}: options must be frozen"
        assert kind.takes in ("file", "folder", "either")
    assert [k.name for k in INPUT_KINDS.values() if k.fallback] == ["imagefolder"]


def test_no_input_module_imports_back_up_the_tree():
    for path in sorted(INPUTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                if name.startswith("tagstream.tools"):
                    assert name.startswith("tagstream.tools.convert.inputs"), f"{path.name} imports {name}"
            assert not (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module")), path.name


def test_every_kind_option_is_a_flag_under_its_kind_in_help():
    res = CliRunner().invoke(main, ["convert", "--help"])
    assert res.exit_code == 0, res.output
    for kind in INPUT_KINDS.values():
        names = [f.name for f in dataclasses.fields(kind.options_type)]
        if not names:
            assert f"(--format {kind.name}):" not in res.output
            continue
        heading = res.output.index(f"{kind.title} (--format {kind.name}):")
        section = res.output[heading:].split("\n\n", 1)[0]
        for name in names:
            assert "--" + name.replace("_", "-") in section, f"--{name} not under {kind.title}"
    general = res.output[res.output.index("Options:") :].split("\n\n", 1)[0]
    assert "--shard-size" in general and "--tags-field" not in general and "--image-column" not in general


def _table(tmp_path: Path) -> Path:
    (tmp_path / "a.jpg").write_bytes(image_bytes(1)[1])
    path = tmp_path / "t.csv"
    path.write_text("file,labels\na.jpg,x y\n")
    return path


def test_an_options_object_and_keyword_options_are_the_same_source(tmp_path):
    path = _table(tmp_path)
    typed = Source(path, options=CsvOptions(image_column="file", tags_column="labels"))
    flat = Source(path, image_column="file", tags_column="labels", tags_field="other", images="")  # tars', YFCC's
    assert typed.format == flat.format == "csv" and typed.options == flat.options
    assert typed.describe() == flat.describe() and typed.scan() == flat.scan()
    assert [i.tags for i in typed.items()] == [("x", "y")]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: Source(p, colour="red"), "unknown source option.s. colour; allowed: caption_column"),
        (lambda p: Source(p, image_column=3), "source option image_column must be a str, got 3"),
        (lambda p: Source(p, "csv", options=TarOptions()), "--format csv takes CsvOptions, got TarOptions"),
        (lambda p: Source(p, options=CsvOptions(), image_column="x"), "not both"),
    ],
)
def test_bad_options_are_refused_with_one_line(tmp_path, make, message):
    with pytest.raises(ValueError, match=message):
        make(_table(tmp_path))


def test_auto_detection_asks_the_kinds_in_order(tmp_path):
    (tmp_path / "tars").mkdir()
    (tmp_path / "tars" / "0.tar").write_bytes(b"")
    (tmp_path / "tars" / "x.parquet").write_bytes(b"")  # tars come first in the registry
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "0.parquet").write_bytes(b"")
    (tmp_path / "photos" / "beach").mkdir(parents=True)
    (tmp_path / "m.ndjson").write_text(json.dumps({"image": "a.jpg"}) + "\n")
    assert detect_format(tmp_path / "tars") == "tar"
    assert detect_format(tmp_path / "tables") == "parquet"
    assert detect_format(tmp_path / "photos") == "imagefolder"
    assert detect_format(tmp_path / "m.ndjson") == "jsonl"
    assert detect_format("s3://bucket/shards/{0..9}.tar") == "tar"
    assert detect_format("hf://datasets/owner/name") == "hf-hub"  # read through huggingface_hub's fsspec
    (tmp_path / "repo" / "data").mkdir(parents=True)
    (tmp_path / "repo" / "data" / "train-00000-of-00001.parquet").write_bytes(b"")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "state.json").write_text("{}")
    (tmp_path / "saved" / "dataset_info.json").write_text("{}")
    assert detect_format(tmp_path / "repo") == "hf-hub" and detect_format(tmp_path / "saved") == "hf-saved"
    with pytest.raises(ValueError, match="a URL or a pattern needs --format"):
        detect_format("s3://bucket/photos/", "imagefolder")
    with pytest.raises(ValueError, match="--format yfcc needs a file"):
        detect_format(tmp_path / "photos", "yfcc")
