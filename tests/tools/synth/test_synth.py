"""The synthetic hashtag world: determinism, tag statistics, file layout, odd and broken inputs, photo_like, CLI."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, UnidentifiedImageError

from tagstream.tools.cli.synth import synth
from tagstream.tools.convert.inputs.tag_text import caption_hashtags
from tagstream.tools.convert.tags import canonical_tag as canonical
from tagstream.tools.convert.tags import canonical_tags
from tagstream.tools.synth.concepts import CONCEPTS, NONVISUAL, SCENES, SHAPES, junk_tags
from tagstream.tools.synth.draw import photo_like, render
from tagstream.tools.synth.odd import CORRUPT_KINDS, ODD_KINDS
from tagstream.tools.synth.paint import shape_polys
from tagstream.tools.synth.scenes import SCENE_PAINTERS
from tagstream.tools.synth.tags import surface
from tagstream.tools.synth.world import JSONL, SPELLING, STOPLIST, SYNONYMS, WORLD, WorldConfig, make_world, plan_world

SMALL = dict(images=40, downstream_classes=4, downstream_train=2, downstream_eval=1)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("worlds")
    out = {}
    for name, seed, workers in (("a", 0, 1), ("a2", 0, 2), ("b", 1, 1)):
        out[name] = base / name
        make_world(out[name], workers=workers, config=WorldConfig(seed=seed, **SMALL))
    return out


@pytest.fixture(scope="module")
def big_plan():
    return plan_world(WorldConfig(images=3000, seed=0))


def raw_tags(line: dict) -> list[str]:
    """The raw tags of a jsonl line, parsed as `convert` parses them."""
    return line["tags"] if "tags" in line else caption_hashtags(line["caption"])


# --- determinism -----------------------------------------------------------------------------------


def test_same_seed_same_bytes_whatever_the_workers(worlds):
    a, a2 = tree_digest(worlds["a"]), tree_digest(worlds["a2"])
    assert a == a2
    assert JSONL in a and WORLD in a and any(k.startswith("images/") for k in a)


def test_other_seed_other_world(worlds):
    a, b = tree_digest(worlds["a"]), tree_digest(worlds["b"])
    assert a[JSONL] != b[JSONL]
    same_images = [k for k in a if k.startswith("images/") and a[k] == b.get(k)]
    assert same_images == []


# --- layout --------------------------------------------------------------------------------------


def test_jsonl_lines_name_existing_baseline_jpegs(worlds):
    root = worlds["a"]
    lines = [json.loads(s) for s in (root / JSONL).read_text(encoding="utf-8").splitlines()]
    assert len(lines) == SMALL["images"]
    cfg = WorldConfig()
    for line in lines:
        assert set(line) in ({"image", "tags"}, {"image", "caption"})
        with Image.open(root / line["image"]) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and not img.info.get("progressive")
            assert cfg.min_side <= min(img.size) and max(img.size) <= cfg.max_side


def test_world_json_matches_jsonl(worlds):
    root = worlds["a"]
    world = json.loads((root / WORLD).read_text(encoding="utf-8"))
    lines = (root / JSONL).read_text(encoding="utf-8").splitlines()
    assert world["format"] == "tagstream-synth-world" and world["version"] == 1
    assert [c["name"] for c in world["concepts"]] == [c.name for c in CONCEPTS]
    for rec in world["images"]:
        line = json.loads(lines[rec["line"] - 1])
        assert line["image"] == rec["image"]
        assert canonical_tags(raw_tags(line)) == rec["tags"]
        assert 1 <= len(rec["concepts"]) <= 2 and all(n in {c.name for c in CONCEPTS} for n in rec["concepts"])


def test_downstream_one_class_per_image(worlds):
    root = worlds["a"]
    world = json.loads((root / WORLD).read_text(encoding="utf-8"))
    classes = world["downstream"]["classes"]
    assert len(classes) == SMALL["downstream_classes"]
    for split, n in (("train", SMALL["downstream_train"]), ("eval", SMALL["downstream_eval"])):
        assert sorted(p.name for p in (root / "downstream" / split).iterdir()) == sorted(classes)
        for cls in classes:
            files = sorted((root / "downstream" / split / cls).iterdir())
            assert len(files) == n and all(f.name.startswith(cls + "_") for f in files)
            for f in files:
                with Image.open(f) as img:
                    assert img.format == "JPEG"
    listed = {json.loads(s)["image"] for s in (root / JSONL).read_text(encoding="utf-8").splitlines()}
    assert not any(s.startswith("downstream/") for s in listed)


def test_downstream_spans_frequent_and_rare_concepts():
    plan = plan_world(WorldConfig(images=10, downstream_classes=24))
    ranks = sorted(CONCEPTS.index(c) for c in plan.downstream)
    assert len(ranks) == 24 and ranks[0] == 0 and ranks[-1] == len(CONCEPTS) - 1


def test_synonym_and_stoplist_files(worlds):
    root = worlds["a"]
    rows = [line.split("\t") for line in (root / SYNONYMS).read_text(encoding="utf-8").splitlines()]
    assert [r[0] for r in rows] == [c.name for c in CONCEPTS]
    by_name = {r[0]: r for r in rows}
    assert {"kitty", "kitteh", "kittten"} <= set(by_name["kitten"])
    for r in rows:
        assert all(t == canonical(t) and t for t in r)
    spelling = {line.split("\t")[0]: line.split("\t")[1:] for line in (root / SPELLING).read_text().splitlines()}
    assert "kitty" not in spelling["kitten"] and "kitteh" in spelling["kitten"]
    stop = (root / STOPLIST).read_text(encoding="utf-8").split()
    assert {"tbt", "love"} <= set(stop)
    assert not set(stop) & {s for c in CONCEPTS for s in c.spellings()}


# --- hashtag statistics, on a full-size plan (no pixels) -----------------------------------------


def test_tag_frequencies_are_zipf_like(big_plan):
    counts = Counter(t for r in big_plan.records for t in r["tags"])
    freq = np.array(sorted(counts.values(), reverse=True), dtype=np.float64)
    ranks = np.arange(1, len(freq) + 1)
    slope = np.polyfit(np.log(ranks), np.log(freq), 1)[0]
    assert slope < -0.8, slope
    assert freq[0] > 20 * np.median(freq)
    assert 200 <= len(freq) <= 1000  # a few hundred distinct tags


def test_concepts_frequent_and_rare(big_plan):
    shown = Counter(n for r in big_plan.records for n in r["concepts"])
    counts = np.array([shown[c.name] for c in CONCEPTS], dtype=np.float64)
    slope = np.polyfit(np.log(np.arange(1, len(counts) + 1)), np.log(np.maximum(counts, 1)), 1)[0]
    assert slope < -0.8, slope
    assert counts.max() >= 300
    assert 1 <= counts[-5:].min() <= 20  # a handful of images for the rarest


def test_tags_are_noisy_like_real_ones(big_plan):
    recs = big_plan.records
    kitten = {t for r in recs for t in r["tags"] if t in CONCEPTS[3].spellings()}
    assert CONCEPTS[3].name == "kitten" and {"kitten", "kitty"} <= kitten and len(kitten) >= 4
    raw = [t for s in big_plan.lines for t in raw_tags(json.loads(s))]
    casings = Counter(canonical(t) for t in set(raw))
    assert casings["kitten"] >= 3  # e.g. kitten, #kitten, #Kitten
    all_tags = Counter(t for r in recs for t in r["tags"])
    assert all_tags["tbt"] > 0 and all_tags["love"] > all_tags["tbt"]
    pairs = [(r, n) for r in recs for n in r["concepts"]]
    missing = sum(
        1 for r, n in pairs if not set(r["tags"]) & set(CONCEPTS[[c.name for c in CONCEPTS].index(n)].spellings())
    )
    assert 0.15 < missing / len(pairs) < 0.25  # TagModel.missing = 0.2
    untagged = sum(1 for r in recs if not r["tags"])
    assert 0 < untagged < 0.1 * len(recs)
    several = sum(1 for r in recs if len(r["tags"]) >= 3)
    assert several > 0.3 * len(recs)


def test_captions_carry_the_same_tags(big_plan):
    caps = [(json.loads(s), r) for s, r in zip(big_plan.lines, big_plan.records) if "caption" in json.loads(s)]
    assert 0.1 < len(caps) / len(big_plan.records) < 0.2
    for line, rec in caps:
        assert canonical_tags(caption_hashtags(line["caption"])) == rec["tags"]
    for s, rec in zip(big_plan.lines, big_plan.records):
        assert canonical_tags(raw_tags(json.loads(s))) == rec["tags"]


def test_surface_forms_fold_back_to_canonical():
    rng = np.random.default_rng(5)
    tokens = [s for c in CONCEPTS for s in c.spellings()] + list(NONVISUAL) + junk_tags(rng, 50)
    forms = set()
    for t in tokens:
        for _ in range(20):
            for in_caption in (False, True):
                s = surface(t, rng, in_caption=in_caption, hash_prefix=0.5)
                assert canonical(s) == t, (s, t)
                forms.add(s)
    assert "＃" not in "".join(forms)
    assert any(not s.isascii() and canonical(s).isascii() for s in forms)  # fullwidth forms occur


# --- odd and broken inputs -----------------------------------------------------------------------


def test_odd_and_corrupt_entries(tmp_path):
    cfg = WorldConfig(images=8, downstream_classes=0, odd=True, corrupt=len(CORRUPT_KINDS))
    make_world(tmp_path / "w", config=cfg)
    root = tmp_path / "w"
    world = json.loads((root / WORLD).read_text(encoding="utf-8"))
    lines = (root / JSONL).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8 + len(ODD_KINDS) + len(CORRUPT_KINDS)
    assert [r["format"] for r in world["odd"]] == list(ODD_KINDS)
    expect = {
        "png": ("PNG", "RGB"),
        "png_rgba": ("PNG", "RGBA"),
        "png16": ("PNG", "I;16"),
        "webp": ("WEBP", "RGB"),
        "gif": ("GIF", "P"),
        "progressive_jpeg": ("JPEG", "RGB"),
        "cmyk_jpeg": ("JPEG", "CMYK"),
        "grey_jpeg": ("JPEG", "L"),
        "jpeg_named_png": ("JPEG", "RGB"),
        "oversized_jpeg": ("JPEG", "RGB"),
        "tiny_jpeg": ("JPEG", "RGB"),
        "bomb_png": ("PNG", "1"),
    }
    for rec in world["odd"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(root / rec["image"]) as img:
                assert (img.format, img.mode) == expect[rec["format"]], rec
                size = img.size
                if rec["format"] == "progressive_jpeg":
                    assert img.info.get("progressive")
        assert {"oversized_jpeg": (3000, 2000), "tiny_jpeg": (24, 18), "bomb_png": (10000, 10000)}.get(
            rec["format"], size
        ) == size
        assert json.loads(lines[rec["line"] - 1])["image"] == rec["image"]
    assert (root / "images/odd_bomb_png.png").stat().st_size < 100_000
    kinds = {r["kind"]: r for r in world["corrupt"]}
    assert set(kinds) == set(CORRUPT_KINDS)
    for kind, rec in kinds.items():
        line, path = lines[rec["line"] - 1], root / rec["image"]
        if kind == "bad_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(line)
            continue
        if kind == "bad_record":
            assert "image" not in json.loads(line)
            continue
        assert json.loads(line)["image"] == rec["image"]
        if kind == "missing_file":
            assert not path.exists()
        elif kind == "zero_byte":
            assert path.stat().st_size == 0
        elif kind == "not_an_image":
            with pytest.raises(UnidentifiedImageError):
                Image.open(path)
        else:
            with pytest.raises(OSError, match="truncated"), Image.open(path) as img:
                img.load()


def test_odd_files_do_not_change_the_regular_images(tmp_path):
    small = dict(images=6, downstream_classes=0)
    make_world(tmp_path / "plain", config=WorldConfig(**small))
    make_world(tmp_path / "odd", config=WorldConfig(**small, corrupt=2))
    a, b = tree_digest(tmp_path / "plain"), tree_digest(tmp_path / "odd")
    assert all(b[k] == v for k, v in a.items() if k.startswith("images/"))


# --- drawing -------------------------------------------------------------------------------------


def test_every_concept_draws_and_differs():
    assert set(SCENE_PAINTERS) == set(SCENES)
    for shape in SHAPES:
        assert shape_polys(shape)
    images = {}
    for c in CONCEPTS:
        img = render([c], np.random.default_rng(7), width=96, height=80)
        assert img.shape == (80, 96, 3) and img.dtype == np.uint8 and img.std() > 5
        assert np.array_equal(img, render([c], np.random.default_rng(7), width=96, height=80))
        images[c.name] = img
    names = list(images)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(images[a].astype(int) - images[b].astype(int)).mean() > 2, (a, b)
    with pytest.raises(ValueError, match="scene"):
        render([CONCEPTS[0], CONCEPTS[2]], np.random.default_rng(0), width=32, height=32)  # sunset + beach


# --- photo_like ----------------------------------------------------------------------------------


def test_photo_like_jpeg_size_like_imagenet():
    sizes = []
    for seed in range(8):
        img = photo_like(np.random.default_rng(seed))
        assert img.shape == (375, 500, 3) and img.dtype == np.uint8
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        sizes.append(len(buf.getvalue()) / 1024)
    assert all(50 <= s <= 110 for s in sizes), sizes


def test_photo_like_has_a_natural_spectrum():
    img = photo_like(np.random.default_rng(0), 256, 256).astype(np.float64).mean(axis=2)
    power = np.abs(np.fft.fft2(img - img.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(256), np.fft.fftfreq(256), indexing="ij")
    f = np.hypot(fx, fy)
    bins = np.geomspace(2 / 256, 0.4, 12)
    radial = [power[(f >= lo) & (f < hi)].mean() for lo, hi in zip(bins[:-1], bins[1:])]
    slope = np.polyfit(np.log(np.sqrt(bins[:-1] * bins[1:])), np.log(radial), 1)[0]
    assert -3.0 < slope < -1.5, slope  # natural images: power ~ 1/f^2


def test_photo_like_deterministic_and_validated():
    a = photo_like(np.random.default_rng(3), 64, 48)
    assert np.array_equal(a, photo_like(np.random.default_rng(3), 64, 48))
    assert not np.array_equal(a, photo_like(np.random.default_rng(4), 64, 48))
    with pytest.raises(ValueError, match="width"):
        photo_like(np.random.default_rng(0), 0, 10)


# --- config and CLI ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        dict(images=0),
        dict(seed=-1),
        dict(quality=101),
        dict(min_side=300, max_side=200),
        dict(downstream_classes=len(CONCEPTS) + 1),
        dict(caption_fraction=1.5),
    ],
)
def test_config_rejects_bad_values(bad):
    key = next(iter(bad)) if "max_side" not in bad else "max_side"
    with pytest.raises(ValueError, match=key):
        WorldConfig(**bad)


def test_refuses_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        make_world(tmp_path / "x", images=1)


def test_cli(tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        synth,
        [
            str(tmp_path / "w"),
            "--images",
            "5",
            "--downstream-classes",
            "2",
            "--downstream-train",
            "1",
            "--downstream-eval",
            "1",
            "--corrupt",
            "1",
            "--min-side",
            "100",
            "--max-side",
            "120",
        ],
    )
    assert res.exit_code == 0, res.output
    for f in (tmp_path / "w").rglob("*.jpg"):
        if "bad_" not in f.name:
            with Image.open(f) as img:
                assert 100 <= min(img.size) and max(img.size) <= 120
    assert "pretraining images: 5" in res.output and "downstream: 2 classes, 4 images" in res.output
    assert len((tmp_path / "w" / JSONL).read_text().splitlines()) == 6
    again = runner.invoke(synth, [str(tmp_path / "w"), "--images", "5"])
    assert again.exit_code == 2 and "not empty" in again.output
    bad = runner.invoke(synth, [str(tmp_path / "v"), "--min-side", "300", "--max-side", "200"])
    assert bad.exit_code == 2 and "max_side" in bad.output
    helped = runner.invoke(synth, ["--help"])
    assert helped.exit_code == 0 and "Example" in helped.output and "tagstream synth" in helped.output


def _wordnet_index(root: Path) -> dict[str, list[str]]:
    """lemma -> synset offsets, most frequent sense first (wndb(5) index.noun)."""
    index: dict[str, list[str]] = {}
    for line in (root / "index.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith(" "):
            continue
        f = line.split()
        index[f[0]] = f[4 + int(f[3]) + 2 :]
    return index


@pytest.mark.skipif(
    not Path("/usr/share/wordnet/index.noun").exists(), reason="WordNet 3.0 (wordnet-base) not installed"
)
def test_synonyms_are_wordnet_lemmas_of_the_synset():
    root = Path("/usr/share/wordnet")
    index = _wordnet_index(root)
    for c in CONCEPTS:
        for lemma in (c.name, *c.synonyms):
            assert c.synset in index.get(lemma, []), (c.name, lemma)
