"""Zero-shot class maps: downstream names meet vocabulary classes by name, member, synonym line and WordNet synset;
unmapped classes are named; and the whole zero-shot transfer on a tiny world through `tagstream transfer`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tagstream.loader.data.vocab import VocabClass
from tagstream.tools.vocab.classmap import map_classes
from tagstream.tools.vocab.lists import SynonymLine
from tagstream.tools.vocab.wordnet import WordNet
from tagstream.train.zeroshot import UNMAPPED, class_scores
from tests.helpers.wordnet import write_wordnet_db

CLASSES = [
    VocabClass(0, "kitten", 50, ("kitten", "kittens")),
    VocabClass(1, "car", 40, ("car", "cars")),
    VocabClass(2, "sunset", 30, ("sunset", "sundown")),
    VocabClass(3, "auto", 20, ("auto",)),
    VocabClass(4, "brown_bear", 10, ("brown_bear", "bruin")),
]


def test_names_members_synonyms_and_wordnet(tmp_path):
    write_wordnet_db(tmp_path / "wn")
    synonyms = [SynonymLine("dusk", ("dusk", "sunset", "twilight"), 1)]
    found = map_classes(
        ["Kitten", "sundown", "twilight", "automobile", "Brown Bear", "zebra", "kitty", "pool"],
        CLASSES,
        synonyms=synonyms,
        wordnet=WordNet(tmp_path / "wn"),
    )
    assert found.hashtags["Kitten"] == (0,) and found.how["Kitten"] == {"kitten": "name"}
    assert found.hashtags["sundown"] == (2,) and found.how["sundown"] == {"sunset": "member"}
    # a word of the synonyms file that no image carries still reaches the class through its line
    assert found.how["twilight"] == {"sunset": "synonym"}
    # "automobile" is never a tag, but shares car's first-sense synset: both classes whose members sit there
    assert found.hashtags["automobile"] == (1, 3) and set(found.how["automobile"].values()) == {"wordnet"}
    assert found.how["Brown Bear"] == {"brown_bear": "name"}  # canonicalised like a hashtag
    # this WordNet's first sense of "kitty" is the kitten; "pool" (the stakes) names no class's synset
    assert found.how["kitty"] == {"kitten": "wordnet"}
    assert found.unmapped == ("zebra", "pool")
    summary = found.summary()
    assert summary["mapped"] == 6 and summary["classes"] == 8 and summary["unmapped"] == ["zebra", "pool"]


def test_without_wordnet_only_names_members_and_synonyms():
    found = map_classes(["automobile", "cars"], CLASSES)
    assert found.unmapped == ("automobile",) and found.how["cars"] == {"car": "member"}


def test_scores_sum_a_class_hashtags_and_divide_by_the_prior():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    prior = np.array([0.6, 0.2, 0.2])
    raw = class_scores(probs, [(0,), (1, 2), ()], prior, 0.0)
    assert np.allclose(raw[:, :2], np.log([[0.5, 0.5], [0.1, 0.9]])) and (raw[:, 2] == UNMAPPED).all()
    corrected = class_scores(probs, [(0,), (1, 2), ()], prior, 1.0)
    assert np.allclose(corrected[:, :2], np.log([[0.5 / 0.6, 0.5 / 0.4], [0.1 / 0.6, 0.9 / 0.4]]))
    assert corrected[0].argmax() == 1 and raw[0, 0] == raw[0, 1]  # the prior breaks the frequent class's hold


@pytest.mark.usefixtures("one_torch_thread")
def test_zero_shot_end_to_end_on_a_tiny_world(tmp_path):
    from tagstream.tools.cli import main as cli
    from tagstream.tools.convert.engine import convert
    from tagstream.tools.vocab.build import VocabOptions, build_vocab
    from tagstream.train.checkpoint import latest_checkpoint
    from tagstream.train.config import load_config
    from tagstream.train.loop import main
    from tests.helpers.transfer_data import downstream_datasets, imagefolder

    # the hashtag world: noisy colours tagged with their colour's name; the labelled task: the same colours
    imagefolder(tmp_path / "src_tags", {"red": 24, "green": 24, "blue": 24}, 5)
    convert(tmp_path / "src_tags", tmp_path / "tags", format="imagefolder")
    build_vocab(tmp_path / "tags", "v", VocabOptions())
    config = load_config(
        "tiny-cpu",
        [
            f"data.dataset={json.dumps(str(tmp_path / 'tags'))}",
            "data.vocab=v",
            f"run.out_dir={json.dumps(str(tmp_path / 'run'))}",
            "data.image_size=32",
            "batch.global_size=16",
            "run.steps=40",
            "data.holdout_fraction=0",
            "run.progress=false",
            "data.workers=1",
            "run.threads=1",
        ],
    )
    main(config)
    train, evaluation = downstream_datasets(tmp_path)
    res = CliRunner().invoke(
        cli,
        [
            "transfer",
            "--mode",
            "zeroshot",
            "--checkpoint",
            str(latest_checkpoint(tmp_path / "run")),
            "--eval",
            str(evaluation),
            "--baseline",
            "random",
            "--out",
            str(tmp_path / "zs.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "zs.json").read_text())
    assert report["mode"] == "zeroshot" and report["mapping"]["mapped"] == 3 and report["mapping"]["unmapped"] == []
    assert report["mapping"]["how"]["red"] == {"red": "name"}
    pre, rnd = report["results"]["pretrained"], report["results"]["random"]
    assert pre["images"] == 15 and pre["top1"] >= 0.8, pre  # colours: the head knows them
    assert pre["top1"] > rnd["top1"] and pre["top5"] == 1.0  # 3 classes: top-5 holds every one
    assert "3 of 3 classes mapped" in res.output
    # with --train only the prior correction's strength is fitted
    fitted = CliRunner().invoke(
        cli,
        [
            "transfer",
            "--mode",
            "zeroshot",
            "--checkpoint",
            str(latest_checkpoint(tmp_path / "run")),
            "--eval",
            str(evaluation),
            "--train",
            str(train),
            "--out",
            str(tmp_path / "zs2.json"),
        ],
    )
    assert fitted.exit_code == 0, fitted.output
    r2 = json.loads((tmp_path / "zs2.json").read_text())["results"]["pretrained"]
    assert r2["prior_from"] == "train images" and len(r2["alpha_fit_train_top1"]) == 7
    refused = CliRunner().invoke(
        cli,
        [
            "transfer",
            "--mode",
            "linear",
            "--checkpoint",
            str(latest_checkpoint(tmp_path / "run")),
            "--eval",
            str(evaluation),
        ],
    )
    assert refused.exit_code != 0 and "--train is required with --mode linear" in refused.output
