"""`tagstream vocab`: merges, filters, class ids, per-image labels and the report, on datasets written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.vocab import Vocab
from tagstream.loader.data.writer import write_index, write_manifest, write_tags
from tagstream.tools.cli import main as cli
from tagstream.tools.vocab.build import VocabOptions, build_vocab
from tagstream.tools.vocab.lists import read_synonyms, read_taglist
from tests.helpers.wordnet import REAL_WORDNET, write_wordnet_db


def make_dataset(root: Path, images: list[list[str]], *, shards: int = 2, unused_tags: tuple[str, ...] = ()) -> Path:
    """A dataset with manifest, tags.tsv and the index arrays but no shards (vocab and inspect never read them).

    Tag ids follow first appearance; images are split into `shards` consecutive runs.
    """
    root.mkdir(parents=True)
    ids: dict[str, int] = {}
    for tags in images:
        for t in tags:
            ids.setdefault(t, len(ids))
    for t in unused_tags:
        ids.setdefault(t, len(ids))
    counts = {t: sum(t in tags for tags in images) for t in ids}
    write_tags(root, list(ids), np.array([counts[t] for t in ids], np.int64))
    bounds = np.linspace(0, len(images), shards + 1).round().astype(int)
    entries = []
    for k in range(shards):
        part = images[bounds[k] : bounds[k + 1]]
        name = fmt.shard_name(k)
        rows = [sorted({ids[t] for t in tags}) for tags in part]
        write_index(
            root,
            name,
            tag_offsets=np.concatenate([[0], np.cumsum([len(r) for r in rows])]),
            tag_ids=[t for r in rows for t in r],
            width=np.full(len(part), 32),
            height=np.full(len(part), 32),
            phash=np.full(len(part), 32),
        )  # inspect reads sizes and hashes; vocab does not
        entries.append({"name": name, "images": len(part), "bytes": 0, "sha256": ""})
    write_manifest(root, entries, tags=len(ids), source={"kind": "test", "description": "index only, no shards"})
    return root


def labels_by_name(root: Path, name: str) -> list[list[str]]:
    """Per image, the class names of its labels (in stored order, which must be ascending ids)."""
    v = Vocab(Dataset(root), name)
    names = v.class_names()
    out = []
    for i in range(len(v.label_offsets) - 1):
        row = v.labels[v.label_offsets[i] : v.label_offsets[i + 1]]
        assert np.all(np.diff(row) > 0), "labels of an image must be sorted and unique"
        out.append([names[c] for c in row])
    return out


def table(root: Path, name: str) -> list[tuple[str, int, tuple[str, ...]]]:
    return [(c.name, c.count, c.members) for c in Vocab(Dataset(root), name).classes()]


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# 8 images; "kitty"/"kitten" both on image 1; image 6 has no tag at all
IMAGES = [
    ["cat", "tbt"],
    ["kitten", "kitty", "cute"],
    ["kitten", "love"],
    ["brownbear", "forest"],
    ["bruin", "forest", "tbt"],
    ["car", "auto", "love"],
    [],
    ["automobile", "cat", "kittens"],
]


@pytest.fixture
def ds(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds", IMAGES, unused_tags=("ghost",))


def test_no_options_one_class_per_tag(ds: Path):
    r = build_vocab(ds, "plain", VocabOptions())
    rows = table(ds, "plain")
    # ids by descending count, then name; the unused tag forms no class
    assert [(n, c) for n, c, _ in rows][:6] == [
        ("cat", 2),
        ("forest", 2),
        ("kitten", 2),
        ("love", 2),
        ("tbt", 2),
        ("auto", 1),
    ]
    assert len(rows) == 13 and "ghost" not in [n for n, _, _ in rows]
    assert labels_by_name(ds, "plain")[1] == ["kitten", "cute", "kitty"]  # id order: kitten (2) < cute < kitty
    assert labels_by_name(ds, "plain")[6] == []
    assert r.report["images_without_class"] == 1 and r.report["images_without_tags"] == 1
    assert r.report["dropped"]["no_images"]["tags"] == 1
    assert r.report["tags_merged"] == {"total": 0, "synonyms": 0, "wordnet": 0}
    meta = json.loads((ds / "vocab" / "plain" / "vocab.json").read_text())
    assert meta["classes"] == 13 and meta["images"] == 8


def test_synonyms_merge_and_count_images_once(ds: Path, tmp_path: Path):
    syn = write(tmp_path / "syn.tsv", "# cats\nfeline\tcat\tkitten\tkitty\tkittens\n\n#Car\tauto\tautomobile\n")
    r = build_vocab(ds, "syn", VocabOptions(synonyms=syn))
    rows = {n: (c, m) for n, c, m in table(ds, "syn")}
    # images 0, 1, 2, 7 carry the feline class; image 1 (kitten + kitty) and 7 (cat + kittens) count once
    assert rows["feline"] == (4, ("cat", "kitten", "kittens", "kitty"))
    assert rows["car"] == (2, ("auto", "automobile", "car"))  # '#Car' canonicalizes to car
    assert r.report["tags_merged"] == {"total": 5, "synonyms": 5, "wordnet": 0}
    assert r.report["synonyms"] == {"lines": 2, "words_not_in_dataset": 1}  # "feline" itself
    labels = labels_by_name(ds, "syn")
    assert labels[1] == ["feline", "cute"] and labels[7] == ["feline", "car"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("cat\tkitten\nlonely\n", r"syn\.tsv:2: expected `canonical<TAB>synonym"),
        ("cat\tkitten\ncar auto automobile\n", r"syn\.tsv:2: .*contains spaces but no TAB"),
        ("cat\tkitten\ncar\tauto mobile\n", r"syn\.tsv:2: 'auto mobile' contains spaces; separate entries with TABs"),
        ("cat\tkitten\n\ncar\t\tauto\n", r"syn\.tsv:3: empty synonyms entry"),
        ("cat\tkitten\ncar\tkitten\n", r"syn\.tsv:2: 'kitten' already appears on line 1"),
        ("cat\t#\n", r"syn\.tsv:1: '#' is empty as a canonical tag"),
    ],
)
def test_synonyms_bad_lines_name_the_line(tmp_path: Path, text: str, message: str):
    with pytest.raises(ValueError, match=message):
        read_synonyms(write(tmp_path / "syn.tsv", text))


def test_list_files_missing_or_not_utf8(tmp_path: Path):
    with pytest.raises(ValueError, match="does not exist"):
        read_taglist(tmp_path / "nope.txt", what="stoplist")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_taglist(bad)


def test_wordnet_merge_named_after_most_frequent_member(ds: Path, tmp_path: Path):
    write_wordnet_db(tmp_path / "wn")
    r = build_vocab(ds, "wn", VocabOptions(wordnet=str(tmp_path / "wn")))
    rows = {n: (c, m) for n, c, m in table(ds, "wn")}
    assert rows["kitten"] == (3, ("kitten", "kittens", "kitty"))  # kitten (2 images) names it
    # car (1), auto (1), automobile (1): tie on count, name is the alphabetically first member
    assert rows["auto"] == (2, ("auto", "automobile", "car"))
    assert rows["brownbear"] == (1, ("brownbear",))  # bruin's first sense is the tales' bear: not merged
    assert rows["bruin"] == (1, ("bruin",))
    assert r.report["tags_merged"] == {"total": 4, "synonyms": 0, "wordnet": 4}
    assert r.report["wordnet"]["tags_matched"] == 8
    assert r.report["wordnet"]["matched_first_of_several_senses"] == 2  # kitty, bruin
    ex = {e["class"]: e for e in r.report["wordnet"]["merged_examples"]}
    assert ex["auto"]["synset"] == ["car", "auto", "automobile"]


def test_stoplist_drops_classes_and_members(ds: Path, tmp_path: Path):
    syn = write(tmp_path / "syn.tsv", "cat\tkitten\tkitty\n")
    stop = write(tmp_path / "stop.txt", "tbt\nlove\nkitty\n# comment\n")
    r = build_vocab(ds, "stop", VocabOptions(synonyms=syn, stoplist=stop))
    rows = {n: (c, m) for n, c, m in table(ds, "stop")}
    assert "tbt" not in rows and "love" not in rows
    assert rows["cat"] == (4, ("cat", "kitten"))  # the member kitty left the class, the class stayed
    d = r.report["dropped"]["stoplist"]
    assert (d["classes"], d["tags"]) == (2, 3)
    assert labels_by_name(ds, "stop")[0] == ["cat"]


def test_keep_list_matches_names_and_members(ds: Path, tmp_path: Path):
    syn = write(tmp_path / "syn.tsv", "car\tauto\tautomobile\n")
    keep = write(tmp_path / "keep.txt", "automobile\tn02958343\nforest\nzebra\n")
    r = build_vocab(ds, "keep", VocabOptions(synonyms=syn, keep=keep))
    assert [(n, c) for n, c, _ in table(ds, "keep")] == [("car", 2), ("forest", 2)]
    assert r.report["keep"] == {
        "entries": 3,
        "entries_matched": 2,
        "entries_unmatched": 1,
        "unmatched_examples": ["zebra"],
    }
    assert r.report["dropped"]["not_in_keep"]["classes"] == 9  # of 11 classes after the car merge
    assert r.report["images_without_class"] == 4


def test_min_count_and_top(ds: Path):
    build_vocab(ds, "min2", VocabOptions(min_count=2))
    assert [n for n, _, _ in table(ds, "min2")] == ["cat", "forest", "kitten", "love", "tbt"]
    r = build_vocab(ds, "top3", VocabOptions(top=3))
    assert [n for n, _, _ in table(ds, "top3")] == ["cat", "forest", "kitten"]  # ties at 2 broken by name
    assert r.report["dropped"]["top_k"]["classes"] == 10
    r = build_vocab(ds, "both", VocabOptions(min_count=2, top=100))
    assert r.report["classes"] == 5 and r.report["dropped"]["min_count"]["classes"] == 8


def test_all_options_combined(ds: Path, tmp_path: Path):
    write_wordnet_db(tmp_path / "wn")
    syn = write(tmp_path / "syn.tsv", "bear\tbrownbear\n")
    stop = write(tmp_path / "stop.txt", "tbt\nlove\ncute\n")
    keep = write(tmp_path / "keep.txt", "kitten\nbear\ncar\nforest\nbruin\n")
    opts = VocabOptions(synonyms=syn, wordnet=str(tmp_path / "wn"), stoplist=stop, keep=keep, min_count=2, top=2)
    r = build_vocab(ds, "all", opts)
    # after keep: kitten (images 1, 2, 7) 3; auto (5, 7) 2; forest (3, 4) 2; bear (3) 1; bruin (4) 1
    assert table(ds, "all") == [
        ("kitten", 3, ("kitten", "kittens", "kitty")),
        ("auto", 2, ("auto", "automobile", "car")),
    ]
    dropped = r.report["dropped"]
    assert (dropped["stoplist"]["classes"], dropped["stoplist"]["tags"]) == (3, 3)
    assert dropped["not_in_keep"]["examples"] == ["cat"]
    assert dropped["min_count"]["examples"] == ["bear", "bruin"]
    assert dropped["top_k"]["examples"] == ["forest"]
    assert r.report["tags_merged"] == {"total": 4, "synonyms": 0, "wordnet": 4}  # "bear" is no raw tag
    assert labels_by_name(ds, "all") == [[], ["kitten"], ["kitten"], [], [], ["auto"], [], ["kitten", "auto"]]
    assert r.report["images_without_class"] == 4
    assert r.report["order"][1] == "synonyms merge"


def test_rebuild_is_deterministic_and_refuses_without_force(ds: Path, tmp_path: Path):
    syn = write(tmp_path / "syn.tsv", "cat\tkitten\n")
    build_vocab(ds, "v", VocabOptions(synonyms=syn, min_count=1))
    d = ds / "vocab" / "v"
    first = {p.name: p.read_bytes() for p in d.iterdir()}
    with pytest.raises(ValueError, match="already exists"):
        build_vocab(ds, "v", VocabOptions())
    build_vocab(ds, "v", VocabOptions(synonyms=syn, min_count=1), force=True)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == first


def test_bad_names_and_options(ds: Path):
    for bad in ("", "../x", ".hidden", "a b"):
        with pytest.raises(ValueError, match="vocabulary name"):
            build_vocab(ds, bad, VocabOptions())
    with pytest.raises(ValueError, match="min_count=0"):
        VocabOptions(min_count=0)
    with pytest.raises(ValueError, match="top=0"):
        VocabOptions(top=0)


def test_tag_ids_outside_the_table_are_a_format_error(tmp_path: Path):
    root = make_dataset(tmp_path / "ds", [["a"], ["b"]], shards=1)
    np.save(fmt.index_path(root, fmt.shard_name(0), "tag_ids"), np.array([0, 7], dtype="<i4"))
    with pytest.raises(fmt.FormatError, match="outside"):
        build_vocab(root, "v", VocabOptions())


def test_empty_and_tagless_datasets(tmp_path: Path):
    root = make_dataset(tmp_path / "empty", [[], [], []], shards=2)
    r = build_vocab(root, "v", VocabOptions())
    v = Vocab(Dataset(root), "v")
    assert v.num_classes == 0 and list(v.label_offsets) == [0, 0, 0, 0]
    assert r.report["images_without_class"] == 3


def test_many_images_across_chunks(tmp_path: Path, monkeypatch):
    """Chunked passes give the same labels as a direct per-image computation."""
    import tagstream.tools.vocab.build as vocab_mod

    rng = np.random.default_rng(0)
    tags = [f"t{i}" for i in range(30)]
    images = [list(rng.choice(tags, size=rng.integers(0, 5), replace=False)) for _ in range(500)]
    root = make_dataset(tmp_path / "ds", images, shards=3)
    syn = write(tmp_path / "syn.tsv", "t0\tt1\tt2\nt3\tt4\n")
    monkeypatch.setattr(vocab_mod, "CHUNK_IMAGES", 37)
    build_vocab(root, "v", VocabOptions(synonyms=syn, min_count=20))
    group = {"t1": "t0", "t2": "t0", "t4": "t3"}
    names = set(n for n, _, _ in table(root, "v"))
    expected = [sorted({group.get(t, t) for t in im} & names) for im in images]
    got = labels_by_name(root, "v")
    assert [sorted(g) for g in got] == expected
    counts = {n: c for n, c, _ in table(root, "v")}
    assert all(counts[n] == sum(n in e for e in expected) >= 20 for n in names)


def test_cli_builds_and_prints_report(ds: Path, tmp_path: Path):
    stop = write(tmp_path / "stop.txt", "tbt\n")
    runner = CliRunner()
    res = runner.invoke(cli, ["vocab", str(ds), "--name", "c", "--stoplist", stop, "--min-count", "2"])
    assert res.exit_code == 0, res.output
    assert "classes: 4" in res.output and "dropped by stoplist: 1 classes, 1 tags" in res.output
    assert "images: 8, with no class: 1 (of which 1 have no tag at all)" in res.output
    assert f"wrote {ds / 'vocab' / 'c'}" in res.output
    res = runner.invoke(cli, ["vocab", str(ds), "--name", "c"])
    assert res.exit_code != 0 and "already exists" in res.output and "Traceback" not in res.output
    res = runner.invoke(cli, ["vocab", str(ds), "--name", "c", "--synonyms", str(tmp_path / "missing.tsv"), "--force"])
    assert res.exit_code != 0 and "does not exist" in res.output
    res = runner.invoke(cli, ["vocab", "--help"])
    assert res.exit_code == 0 and "Example:" in res.output and "tagstream vocab ds --name v1" in res.output


@pytest.mark.skipif(
    not REAL_WORDNET.is_dir(),
    reason="WordNet 3.0 not installed (/usr/share/wordnet; `make install` tries apt-get install wordnet-base)",
)
def test_real_wordnet_merges(ds: Path):
    r = build_vocab(ds, "real", VocabOptions(wordnet=str(REAL_WORDNET)))
    rows = {n: m for n, _, m in table(ds, "real")}
    assert rows["kitten"] == ("kitten", "kittens")  # kitty: first sense is a pool of money
    assert rows["auto"] == ("auto", "automobile", "car")
    assert r.report["wordnet"]["matched_by"]["despaced"] >= 1  # brownbear -> brown_bear


# --- the sampling report behind `tagstream inspect --vocab NAME --sampling MODE` ---


@pytest.fixture
def skewed(tmp_path: Path) -> Path:
    """Two classes: a on 100 images, b on 1 image, plus one image with no tag."""
    root = make_dataset(tmp_path / "skew", [["a"]] * 100 + [["b"], []], shards=2)
    build_vocab(root, "v", VocabOptions())
    return root


@pytest.mark.parametrize(
    "sampling, expected",
    [
        ("natural", [100.0, 1.0]),  # every drawable image equally likely: 101 draws
        ("sqrt", [101 * 10 / 11, 101 * 1 / 11]),  # class mass sqrt(100) = 10 vs sqrt(1) = 1
        ("uniform", [50.5, 50.5]),  # each class equally likely
        ("power:1", [100.0, 1.0]),
    ],
)
def test_expected_draws_match_the_formula_by_hand(skewed: Path, sampling: str, expected: list[float]):
    from tagstream.tools.inspection.sampling import sampling_report

    r = sampling_report(skewed, "v", sampling=sampling)
    assert r.names == ["a", "b"] and list(r.stored) == [100, 1]
    assert r.samples_per_epoch == 101 and r.drawable == 101
    np.testing.assert_allclose(r.expected, expected, rtol=1e-12)


def test_expected_draws_multilabel_by_hand(tmp_path: Path):
    """img0 {a}, img1 {a, b}, img2 {}: n_a = 2, n_b = 1; sqrt weights w0 = 2^-1/2, w1 = 2^-1/2 + 1."""
    from tagstream.tools.inspection.sampling import sampling_report

    root = make_dataset(tmp_path / "ml", [["a"], ["a", "b"], []], shards=1)
    build_vocab(root, "v", VocabOptions())
    w0, w1 = 2**-0.5, 2**-0.5 + 1
    r = sampling_report(root, "v", sampling="sqrt", samples_per_epoch=1000)
    np.testing.assert_allclose(r.expected, [1000.0, 1000 * w1 / (w0 + w1)], rtol=1e-12)
    r = sampling_report(root, "v", sampling="sqrt", combine="max", samples_per_epoch=1000)
    np.testing.assert_allclose(r.expected, [1000.0, 1000 * 1.0 / (w0 + 1.0)], rtol=1e-12)


def test_sampling_report_text_and_plot(skewed: Path, tmp_path: Path):
    from tagstream.tools.inspection.sampling import (
        effective_classes,
        format_sampling_report,
        plot_sampling,
        sampling_report,
    )

    r = sampling_report(skewed, "v", sampling="sqrt")
    text = format_sampling_report(r)
    assert "most/least frequent class: stored 100x, sampled 10x  (a vs b)" in text
    assert "101 draws per epoch from 101 drawable images" in text
    assert effective_classes(np.array([5.0, 5.0])) == pytest.approx(2.0)
    assert effective_classes(np.array([7.0, 0.0])) == pytest.approx(1.0)
    out = plot_sampling(r, tmp_path / "dist.png")
    from PIL import Image

    with Image.open(out) as im:
        assert im.size == (700, 450)
    with pytest.raises(ValueError, match="sampling 'sqr'"):
        sampling_report(skewed, "v", sampling="sqr")
    with pytest.raises(ValueError, match="no vocabulary 'nope'"):
        sampling_report(skewed, "nope")


def test_inspect_vocab_sampling_cli(skewed: Path, tmp_path: Path):

    runner = CliRunner()
    res = runner.invoke(
        cli, ["inspect", str(skewed), "--vocab", "v", "--sampling", "uniform", "--plot", str(tmp_path / "c.png")]
    )
    assert res.exit_code == 0, res.output
    assert "sampling uniform" in res.output and "stored 100x, sampled 1x" in res.output
    row = next(line for line in res.output.splitlines() if line.startswith("b "))
    assert row.split()[1:4] == ["1", "0.990%", "50.50"]  # 1 image stored, 50.5 expected draws of 101
    assert "class distribution plot written to" in res.output and (tmp_path / "c.png").stat().st_size > 0
    res = runner.invoke(cli, ["inspect", str(skewed), "--vocab", "v", "--json"])
    assert res.exit_code == 0, res.output
    classes = json.loads(res.output)["sampling"]["classes"]
    assert [c["name"] for c in classes] == ["a", "b"]
    assert classes[1]["expected_draws"] == pytest.approx(101 / 11)  # sqrt is the default
    res = runner.invoke(cli, ["inspect", str(skewed), "--vocab", "nope"])
    assert res.exit_code != 0 and "no vocabulary 'nope'" in res.output and "Traceback" not in res.output
    res = runner.invoke(cli, ["inspect", str(skewed), "--vocab", "v", "--sampling", "cubic"])
    assert res.exit_code != 0 and "sampling 'cubic' is not one of" in res.output
    res = runner.invoke(cli, ["inspect", "--help"])
    assert "tagstream inspect ds --vocab v1 --sampling sqrt" in res.output


def test_stoplist_emptying_a_class_drops_it_once(ds: Path, tmp_path: Path):
    syn = write(tmp_path / "syn.tsv", "pets\tcat\tkitten\n")
    stop = write(tmp_path / "stop.txt", "cat\nkitten\n")
    r = build_vocab(ds, "s", VocabOptions(synonyms=syn, stoplist=stop))
    d = r.report["dropped"]["stoplist"]
    assert (d["classes"], d["tags"], d["examples"]) == (1, 2, ["pets"])
    assert "pets" not in [n for n, _, _ in table(ds, "s")]


def test_sampling_report_with_a_mask(skewed: Path):
    from tagstream.tools.inspection.sampling import format_sampling_report, sampling_report

    (skewed / fmt.MASKS_DIR).mkdir()
    mask = np.zeros(102, bool)
    mask[100] = True  # the only image of b
    mask[:50] = True  # half of a
    np.save(skewed / fmt.MASKS_DIR / "m.npy", mask)
    r = sampling_report(skewed, "v", sampling="sqrt", masks=("m",))
    assert list(r.stored) == [50, 0] and r.drawable == 50
    np.testing.assert_allclose(r.expected, [50.0, 0.0])
    assert "1 classes have no eligible image (never drawn)" in format_sampling_report(r)


def test_vocab_on_a_converted_dataset(tiny_dataset, tmp_path: Path):
    """Against convert's real output: canonicalized tags ('#Mod3_0' -> 'mod3_0'), shards of 5, labels by index."""
    root = tiny_dataset(12, shard_size=5)
    syn = write(tmp_path / "syn.tsv", "zero\t#Mod3_0\tMOD5_0\n")
    stop = write(tmp_path / "stop.txt", "#all\n")
    build_vocab(root, "v", VocabOptions(synonyms=syn, stoplist=stop))
    got = labels_by_name(root, "v")
    for i, tags in enumerate(tiny_dataset.tags(i) for i in range(12)):
        expected = {"zero" if t in ("mod3_0", "mod5_0") else t for t in tags if t != "all"}
        assert set(got[i]) == expected, i
    counts = {n: c for n, c, _ in table(root, "v")}
    assert counts["zero"] == len({i for i in range(12) if i % 3 == 0 or i % 5 == 0})  # 0,3,5,6,9,10 -> 6
