"""De-duplication whatever the padding: copies letterboxed or pillarboxed as downloaders store them are
found against their unpadded originals; the content boxes are stored at conversion, shown by inspect and
dedup, checked by verify; datasets converted before them still de-duplicate."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.store import ShardStore
from tagstream.tools.cli import main
from tagstream.tools.dedup.borders import content_box
from tagstream.tools.dedup.imagehash import content_phash
from tagstream.tools.dedup.pairs import read_pairs
from tagstream.tools.dedup.run import run_dedup
from tagstream.tools.verify.checks import verify
from tests.helpers.dedup_worlds import PADDED, build_padded_worlds, drop_content_boxes


@pytest.fixture(scope="module")
def padded(tmp_path_factory):
    return build_padded_worlds(tmp_path_factory.mktemp("padded"))


def test_conversion_stores_each_content_box_and_hashes_inside_it(padded, tmp_path):
    ds = Dataset(padded.train)
    boxes = fmt.unpack_boxes(ds.global_array("content_box"))
    store = ShardStore(ds)
    try:
        for i in range(ds.num_images):
            with fmt.open_image(store.read_image(i)) as img:
                rgb = img.convert("RGB")
            assert tuple(boxes[i].tolist()) == content_box(np.asarray(rgb))
            assert int(ds.global_array("phash")[i]) == content_phash(rgb)[1]  # stored bytes as given: same pixels
    finally:
        store.close()
    assert boxes[0].tolist()[::2] == [0, 256] and 30 <= boxes[0][1] <= 34  # 200x150 in 256: 192 rows, bars of 32
    assert boxes[2].tolist()[1::2] == [0, 200] and 24 <= boxes[2][0] <= 27  # portrait 120x160 in 200: bars of 25
    assert (boxes[4:] == [[0, 0, 200, 150]]).all()  # unpadded images: the whole frame
    assert verify(shutil.copytree(padded.train, tmp_path / "copy")).ok  # a copy: LMDB opens a path once a process


def test_padded_copies_are_found_and_their_boxes_shown(padded):
    result = CliRunner().invoke(main, ["dedup", str(padded.train), "--against", str(padded.eval), "--name", "pad"])
    assert result.exit_code == 0, result.output
    expected = sorted(t for t, _ in PADDED.values())
    assert np.flatnonzero(Dataset(padded.train).load_mask("pad")).tolist() == expected
    rows = read_pairs(padded.train / "masks" / "pad.pairs.tsv")
    assert [(r.train, r.eval) for r in rows] == sorted((t, e) for e, (t, _) in PADDED.items())
    assert all(r.distance <= 10 and r.train_box != (0, 0, r.train_box[2], r.train_box[3]) for r in rows)
    assert {r.eval_box for r in rows} == {(0, 0, 200, 150), (0, 0, 120, 160)}
    assert "TRAIN: 4 images with uniform borders, hashed inside them" in result.output
    assert "content boxes stored, 0 with borders" in result.output
    summary = json.loads((padded.train / "masks" / "pad.summary.json").read_text())
    assert summary["train_bordered"] == 4 and summary["against"][0]["content_boxes"] == "stored"


def test_inspect_shows_the_bordered_images(padded):
    result = CliRunner().invoke(main, ["inspect", str(padded.train), "--json"])
    assert result.exit_code == 0, result.output
    borders = json.loads(result.output)["borders"]
    assert borders["content_boxes"] == "stored" and borders["bordered_images"] == 4
    assert [e["image"] for e in borders["examples"]] == [0, 1, 2, 3] and borders["examples"][0]["size"] == "256x256"
    text = CliRunner().invoke(main, ["inspect", str(padded.train)]).output
    assert "bordered_images      4" in text


def test_datasets_converted_before_the_boxes_still_deduplicate(padded, tmp_path):
    """An old evaluation set gets its boxes found by decoding (all copies found); an old training set is
    joined by its whole-frame hashes as stored, and the summary says to convert it again."""
    old_eval = drop_content_boxes(padded.eval, tmp_path / "old_eval")
    old_train = drop_content_boxes(padded.train, tmp_path / "old_train")
    summary = run_dedup(padded.train, [old_eval], name="old-eval")
    assert summary["against"][0]["content_boxes"] == "detected" and summary["excluded"] == len(PADDED)
    result = CliRunner().invoke(main, ["dedup", str(old_train), "--against", str(old_eval), "--name", "old"])
    assert result.exit_code == 0, result.output
    assert "TRAIN has no content boxes" in result.output and "convert it again" in result.output
    # the old train set's stored pHashes are the new conversion's (of the content): the copies are found too;
    # a dataset truly converted before hashes its whole frames, which the note warns about
    assert json.loads((old_train / "masks" / "old.summary.json").read_text())["train_bordered"] is None
    inspected = CliRunner().invoke(main, ["inspect", str(old_train), "--json"])
    assert "none stored" in json.loads(inspected.output)["borders"]["content_boxes"]
    assert verify(drop_content_boxes(padded.train, tmp_path / "unread")).ok


def test_verify_flags_a_content_box_outside_its_frame(padded, tmp_path):
    damaged = tmp_path / "damaged"
    drop_content_boxes(padded.train, damaged)
    boxes = np.array([[0, 0, 200, 150]] * 5)
    boxes[1] = [0, 0, 999, 150]
    np.save(fmt.index_path(damaged, "00000", "content_box"), fmt.pack_boxes(boxes))
    report = verify(damaged)
    assert not report.ok and any("content_box of image 1" in p.what for p in report.problems)


def test_boxes_pack_and_unpack_exactly():
    boxes = np.array([[0, 0, 1, 1], [3, 7, 65535, 65535], [12, 0, 256, 224]])
    packed = fmt.pack_boxes(boxes)
    assert packed.dtype == np.uint64 and packed.shape == (3,)
    np.testing.assert_array_equal(fmt.unpack_boxes(packed), boxes)
    with Image.new("RGB", (4, 4)) as img:
        assert content_phash(img)[0] == (0, 0, 4, 4)


def test_embeddings_are_taken_inside_the_borders(padded, tmp_path, one_torch_thread):
    """dedup embeds inside the content boxes: each original's nearest training image is its padded copy, and
    nearer than on whole frames (a random-initialised tiny model: features follow the pixels)."""
    from tagstream.tools.dedup.features import EmbedOptions, embed_dataset, open_features
    from tagstream.tools.vocab.build import VocabOptions, build_vocab
    from tagstream.train.embed import EmbedConfig, embed
    from tests.helpers.dedup_worlds import tiny_checkpoint

    for root in (padded.train, padded.eval):
        if "v" not in Dataset(root).vocab_names():
            build_vocab(root, "v", VocabOptions())
    ckpt = str(tiny_checkpoint(tmp_path / "run", vocab="v"))
    train_ds, eval_ds = Dataset(padded.train), Dataset(padded.eval)

    def cosines(train_file, eval_file):
        return open_features([train_file], train_ds).dense() @ open_features([eval_file], eval_ds).dense().T

    options = EmbedOptions(checkpoint=ckpt, device="cpu")
    inside = cosines(embed_dataset(padded.train, options, tmp_path), embed_dataset(padded.eval, options, tmp_path))
    whole_files = []
    for root in (padded.train, padded.eval):
        out = tmp_path / f"whole-{root.name}.npy"
        embed(EmbedConfig(data=str(root), out=str(out), checkpoint=ckpt, device="cpu", progress=False), rank=0, world=1)
        whole_files.append(out)
    whole = cosines(*whole_files)
    for e, (t, _) in PADDED.items():
        assert int(np.argmax(inside[:, e])) == t and inside[t, e] > whole[t, e], (e, inside[:, e], whole[:, e])
