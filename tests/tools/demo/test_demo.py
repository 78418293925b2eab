"""The demo: its grouping rule and table by hand, and the whole pipeline end to end at the tiny size."""

from __future__ import annotations

import json
import math

import pytest

from tagstream.tools.demo.run import SIZES, frequency_groups, group_accuracy


def _world(freqs: dict[str, int]) -> dict:
    return {"concepts": [{"name": n, "tagged_images": f} for n, f in freqs.items()]}


def test_frequency_groups_split_at_the_median():
    world = _world({"a": 50, "b": 3, "c": 20, "d": 7, "e": 1, "z": 999})
    assert frequency_groups(world, ["a", "b", "c", "d"]) == {"rare": ["b", "d"], "frequent": ["c", "a"]}
    # odd count: the median class is in neither group
    assert frequency_groups(world, ["a", "b", "c", "d", "e"]) == {"rare": ["e", "b"], "frequent": ["c", "a"]}


def test_group_accuracy_and_its_standard_error():
    per_class = {"a": 1.0, "b": 0.5, "c": float("nan")}
    p, se = group_accuracy(per_class, ["a", "b"], 20)
    assert p == 0.75
    assert se == pytest.approx(math.sqrt(0.75 * 0.25 / 40))
    assert math.isnan(group_accuracy(per_class, ["c"], 20)[0])


def test_demo_cli_end_to_end_tiny(tmp_path):
    from click.testing import CliRunner

    from tagstream.tools.cli import main

    out = tmp_path / "demo"
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--size", "tiny", "--no-progress"])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    rows = {r["backbone"]: r for r in results["table"]}
    assert set(rows) == {"random init", "hashtags, natural sampling", "hashtags, sqrt sampling"}
    for r in rows.values():
        assert 0.0 <= r["top1"] <= r["top5"] <= 1.0
    s = SIZES["tiny"]
    assert len(results["groups"]["rare"]) == len(results["groups"]["frequent"]) == s.downstream_classes // 2
    for name in ("natural", "sqrt"):
        assert results["pretrain"][name]["steps"] == s.steps
    # square-root sampling takes draws away from the most frequent downstream classes (whether the rare
    # ones gain depends on the other tags their images carry, so that is measured, not asserted)
    share = results["sampled_share"]
    assert share["sqrt"]["frequent"] < share["natural"]["frequent"] <= 1
    assert all(0 <= share[k]["rare"] <= 1 for k in share)
    for plot in results["plots"]:
        assert (out / plot).stat().st_size > 1000
    assert "| hashtags, sqrt sampling |" in (out / "results.md").read_text()
    tail = res.output.strip().splitlines()[-5:]  # it ends by saying where everything is
    assert tail[0] == f"outputs in {out.resolve()}/" and "results.md, results.json" in tail[1]
    assert all(p in tail[2] for p in results["plots"]) and tail[3].startswith("  runs/{natural,sqrt}/")
    for key in ("random", "natural", "sqrt"):  # low-shot probes: every k of the size, SHOT_SEEDS draws each
        low = results["low_shot"][key]
        assert list(low) == [str(k) for k in s.shots]
        assert all(len(v["top1"]) == 5 and 0 <= v["top1_mean"] <= 1 and v["top1_std"] >= 0 for v in low.values())
    assert "| 5-shot top-1 % |" in (out / "results.md").read_text().replace("| 1-shot top-1 % ", "")
    assert "Stage times" in res.output
    # the successors' rows: zero-shot of the sqrt model and its random floor, MAE -> hashtags vs hashtags alone
    zs = results["zero_shot"]
    assert set(zs["results"]) == {"pretrained", "random"} and zs["mapping"]["classes"] == s.downstream_classes
    assert all(0 <= r["top1"] <= r["top5"] <= 1 for r in zs["results"].values())
    mae = results["mae"]
    assert mae["seeds"] == [0] and set(mae["rows"]) == {"vit_random", "vit_mae", "vit_hashtags", "vit_mae_hashtags"}
    assert all(len(r["per_seed"]) == 1 and 0 <= r["top1_mean"] <= 1 for r in mae["rows"].values())
    md = (out / "results.md").read_text()
    assert "| hashtags, sqrt sampling | " in md.split("zero-shot (no downstream training)")[1]
    assert "| ViT, MAE -> hashtags (sqrt) |" in md and "MAE -> hashtags" in res.output
    again = CliRunner().invoke(main, ["demo", "--out", str(out), "--size", "tiny"])
    assert again.exit_code != 0 and "not empty" in again.output


def test_demo_overwrites_only_its_own_folder(tmp_path, monkeypatch):
    from tagstream.tools.demo import run as demo

    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="only a folder an earlier demo wrote"):
        demo.run_demo(other, size="tiny", overwrite=True)
    assert (other / "precious.txt").read_text() == "keep me"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / demo.MARKER).write_text("")
    (mine / "old.txt").write_text("stale")
    # stop right after the folder is prepared: the first stage raises
    monkeypatch.setattr(
        "tagstream.tools.synth.world.make_world", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stop"))
    )
    with pytest.raises(RuntimeError, match="stop"):
        demo.run_demo(mine, size="tiny", overwrite=True, echo=lambda _: None)
    assert not (mine / "old.txt").exists() and (mine / demo.MARKER).is_file()


def test_demo_refuses_unknown_size(tmp_path):
    from tagstream.tools.demo.run import run_demo

    with pytest.raises(ValueError, match="size"):
        run_demo(tmp_path / "x", size="huge")


def test_demo_help_says_what_and_shows_an_example():
    from click.testing import CliRunner

    from tagstream.tools.cli import main

    out = CliRunner().invoke(main, ["demo", "--help"]).output
    assert "Example" in out and "tagstream demo --out" in out and "--vocab-filter" in out
