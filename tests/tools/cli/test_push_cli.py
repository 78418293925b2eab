"""`tagstream push`, then `verify` and `inspect` of the URL, against the local S3 server (tests/helpers/s3server.py)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tagstream.tools.cli import main as cli
from tests.helpers.s3server import _moto_server, s3_server  # noqa: F401 - fixtures


@pytest.fixture
def bucket(s3_server, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the default cache dir of the commands
    s3_server.create_bucket("bkt")
    return s3_server


def test_push_then_verify_and_inspect_the_url(bucket, tiny_dataset, tmp_path):
    ds = tiny_dataset(12, shard_size=5)
    pushed = CliRunner().invoke(cli, ["push", str(ds), "s3://bkt/tiny"])
    assert pushed.exit_code == 0, pushed.output
    assert "pushed" in pushed.output and "s3://bkt/tiny" in pushed.output and "there already" not in pushed.output
    again = CliRunner().invoke(cli, ["push", str(ds), "s3://bkt/tiny"])  # nothing changed: only the manifest goes
    assert again.exit_code == 0 and "files (" in again.output and "were there already" in again.output, again.output
    verified = CliRunner().invoke(cli, ["verify", "s3://bkt/tiny"])
    assert verified.exit_code == 0, verified.output
    assert "OK: 3 shards, 12 images" in verified.output
    assert len(list((tmp_path / "xdg" / "tagstream" / "datasets").glob("tiny-*/shards/*.lmdb/verified.json"))) == 3
    shown = CliRunner().invoke(cli, ["inspect", "s3://bkt/tiny", "--json"])
    assert shown.exit_code == 0, shown.output
    assert '"images": 12' in shown.output


def test_push_and_verify_errors_are_one_line(bucket, tiny_dataset):
    ds = tiny_dataset(6, shard_size=5)
    bad = CliRunner().invoke(cli, ["push", str(ds), "not-a-url"])
    assert bad.exit_code != 0 and "push needs a URL" in bad.output
    missing = CliRunner().invoke(cli, ["verify", "s3://bkt/none"])
    assert missing.exit_code != 0 and "s3://bkt/none: no manifest.json" in missing.output
    assert "Traceback" not in missing.output


def test_push_help_says_what_and_shows_an_example():
    result = CliRunner().invoke(cli, ["push", "--help"])
    assert result.exit_code == 0 and "Upload DATASET to object storage" in result.output
    assert "tagstream push ds s3://" in result.output


def test_push_to_a_file_url_makes_its_folders_and_verifies(tiny_dataset, tmp_path):
    """A file:// URL (a shared filesystem) is a place to push to like a bucket; its folders are made."""
    ds = tiny_dataset(8, shard_size=5)
    url = f"file://{tmp_path}/not/yet/there/ds"
    pushed = CliRunner().invoke(cli, ["push", str(ds), url])
    assert pushed.exit_code == 0, pushed.output
    verified = CliRunner().invoke(cli, ["verify", url])
    assert verified.exit_code == 0 and "OK: 2 shards, 8 images" in verified.output, verified.output
    plot = tmp_path / "plots" / "new" / "tags.png"
    shown = CliRunner().invoke(cli, ["inspect", str(ds), "--plot", str(plot)])
    assert shown.exit_code == 0 and plot.is_file(), shown.output
