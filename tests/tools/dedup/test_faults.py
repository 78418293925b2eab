"""`tagstream dedup` against a damaged evaluation set and a hostile mask name: one-line errors."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from tagstream.loader.data.format import MAX_PIXELS, FormatError
from tagstream.loader.data.store import ShardStore, close_all
from tagstream.tools.cli import main
from tagstream.tools.dedup.run import run_dedup
from tests.helpers.damage import forge_size, put_record, small_jpeg


@pytest.fixture(params=[65500, 10000])
def pair(tiny_dataset, tmp_path, request):
    """(train, eval): eval's record 1 of shard 00000 holds an image-bomb header (side x side claimed by 2 KB):
    65500 makes Pillow refuse at open (was a DecompressionBombError traceback); 10000 (100 MP, under Pillow's
    refusal at twice its limit) Pillow would decode, allocating 300 MB."""
    side = request.param
    train = tiny_dataset(6, shard_size=5)
    evals = shutil.copytree(train, tmp_path / "eval")
    rec = ShardStore(evals).read(1)
    close_all()
    from tagstream.loader.data import format as fmt

    put_record(evals, "00000", 1, fmt.pack_record(forge_size(small_jpeg(), side, side), rec["tags"], rec["source"]))
    return train, evals


def test_mirrors_on_an_image_bomb_header_is_one_error(pair):
    train, evals = pair
    with pytest.raises(
        FormatError, match=f"shard 00000 key 1 .* does not decode: .*(exceeds limit|over the limit of {MAX_PIXELS})"
    ):
        run_dedup(train, [evals], name="m", exact=False, mirrors=True)  # was: Pillow's DecompressionBombError
    res = CliRunner().invoke(main, ["dedup", str(train), "--against", str(evals), "--name", "m", "--mirrors"])
    assert res.exit_code == 1 and "Traceback" not in res.output and "does not decode" in res.output


@pytest.mark.parametrize("name", ["m\n", "../../x"])
def test_mask_names_that_are_paths_or_end_in_a_newline_are_refused(pair, name):
    train, evals = pair
    with pytest.raises(ValueError, match="mask name .* is not allowed"):
        run_dedup(train, [evals], name=name)
