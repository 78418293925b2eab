"""Conversion writes each image's digest (index/NNNNN.digest.npy): the 64-bit BLAKE2b of the bytes it stored, in a
one-process conversion and in a partitioned one (`--parts` plan, `--part I/N`, `merge`: part 0's shards renamed,
the others rewritten with global tag ids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tagstream.loader.data import format as fmt
from tagstream.loader.data.manifest import read_manifest
from tagstream.tools.cli import main
from tagstream.tools.convert.engine import convert
from tagstream.tools.verify.checks import verify
from tests.helpers.exact_worlds import blake2b_64
from tests.helpers.records import partition_source

SHARD = 2


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return partition_source(tmp_path_factory.mktemp("digest_src"))


def stored_and_digests(root: Path) -> list[tuple[bytes, int]]:
    """(stored image bytes, index digest) of every image, in global order."""
    rows = []
    for shard in read_manifest(root)["shards"]:
        digests = np.load(fmt.index_path(root, shard["name"], "digest"))
        assert digests.dtype == np.dtype("<u8") and shard["index"]["digest"] == fmt.file_sha256(
            fmt.index_path(root, shard["name"], "digest")
        )
        env = fmt.open_env(fmt.shard_path(root, shard["name"]))
        with env.begin() as txn:
            rows += [(fmt.unpack_record(v)["image"], int(digests[i])) for i, (_, v) in enumerate(txn.cursor())]
        env.close()
        assert len(digests) == shard["images"]
    return rows


def test_a_conversion_stores_the_digest_of_every_image(source, tmp_path):
    convert(source, tmp_path / "ds", shard_size=SHARD)
    rows = stored_and_digests(tmp_path / "ds")
    assert len(rows) == 13 and all(d == blake2b_64(image) for image, d in rows)
    assert len({d for _, d in rows}) == 13  # 13 distinct images, 13 distinct digests


def test_a_partitioned_conversion_and_merge_store_them_too(source, tmp_path):
    one, out = tmp_path / "one", tmp_path / "parts"
    convert(source, one, shard_size=SHARD)
    runner = CliRunner()
    for args in (
        ["convert", str(source), str(out), "--parts", "3", "--shard-size", str(SHARD)],
        *(["convert", str(source), str(out), "--part", f"{i}/3", "--shard-size", str(SHARD)] for i in range(3)),
        ["merge", str(out)],
    ):
        res = runner.invoke(main, [*args, "--no-progress"] if args[0] == "convert" else args)
        assert res.exit_code == 0, res.output
    rows = stored_and_digests(out)
    assert all(d == blake2b_64(image) for image, d in rows)
    assert rows == stored_and_digests(one)  # same bytes, same digests as the one-process conversion
    assert verify(out).ok
