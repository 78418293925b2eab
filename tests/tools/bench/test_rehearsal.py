"""`tagstream bench rehearsal` through the real CLI group: the inputs stage alone (fast), the refusals, and the whole
command at small N (every stage, the kill and the resume, the planted copies' recall, a rerun skipping all)."""

from __future__ import annotations

import json
import tarfile

from click.testing import CliRunner

from tagstream.tools.cli import main


def _invoke(args):
    return CliRunner().invoke(main, ["bench", "rehearsal", *args])


def test_inputs_stage_alone(tmp_path):
    work = tmp_path / "r"
    res = _invoke([str(work), "--images", "40", "--eval-images", "30", "--stages", "inputs", "--workers", "2"])
    assert res.exit_code == 0, res.output
    record = json.loads((work / "rehearsal.json").read_text())
    (step,) = record["steps"]
    assert step["stage"] == "inputs" and step["wall_s"] > 0 and step["cpu_s"] > 0 and step["peak_rss_mib"] > 0
    assert step["disk_bytes"] > 0 and step["images"] == 40 + record["settings"]["planted"]
    planted = json.loads((work / "planted.json").read_text())["pairs"]
    assert len(planted) == record["settings"]["planted"] == 9
    assert {p["edit"] for p in planted} == {"crop", "reencode", "border"}
    with tarfile.open(work / "inputs" / "train" / "00000.tar") as tf:
        names = tf.getnames()
        meta = json.loads(tf.extractfile(f"{planted[0]['train_key']}.json").read())
    assert sum(n.endswith(".jpg") for n in names) == 40 + 9
    with tarfile.open(work / "inputs" / "eval" / "00000.tar") as tf:  # a planted copy keeps its original's tags
        original = json.loads(tf.extractfile(f"{planted[0]['eval_key']}.json").read())
        assert sum(n.endswith(".jpg") for n in tf.getnames()) == 30
    assert {k: v for k, v in meta.items() if k != "key"} == {k: v for k, v in original.items() if k != "key"}
    assert (work / "inputs" / "synonyms.tsv").is_file() and (work / "inputs" / "stoplist.txt").is_file()
    assert any((work / "inputs" / "downstream" / "train").iterdir())
    assert "| inputs | make inputs |" in (work / "rehearsal.md").read_text()
    assert record["command"].startswith(f"tagstream bench rehearsal {work} --images 40 --eval-images 30")

    again = _invoke([str(work), "--images", "40", "--eval-images", "30", "--stages", "inputs"])
    assert again.exit_code == 0 and "done before, skipped" in again.output

    redo = _invoke([str(work), "--images", "40", "--eval-images", "30", "--stages", "inputs", "--redo", "inputs"])
    assert redo.exit_code == 0 and "done before" not in redo.output, redo.output
    (step,) = json.loads((work / "rehearsal.json").read_text())["steps"]
    assert [e["wall_s"] for e in step["earlier"]] == [record["steps"][0]["wall_s"]] and "earlier" not in step[
        "earlier"
    ][0]
    assert "| inputs | make inputs (earlier run, before --redo) |" in (work / "rehearsal.md").read_text()
    outside = _invoke([str(work), "--images", "40", "--eval-images", "30", "--stages", "inputs", "--redo", "vocab"])
    assert outside.exit_code != 0 and "must be one of --stages too" in outside.output

    later = _invoke([str(work), "--images", "40", "--eval-images", "30", "--stages", "vocab"])
    assert later.exit_code != 0 and "stage 'convert' has not run yet" in later.output
    other = _invoke([str(work), "--images", "50", "--eval-images", "30", "--stages", "inputs"])
    assert other.exit_code != 0 and "images: 40 -> 50" in other.output


def test_bad_stage_and_foreign_folder_refused(tmp_path):
    res = _invoke([str(tmp_path / "r"), "--stages", "inputs,fly"])
    assert res.exit_code != 0 and "unknown fly" in res.output and "Traceback" not in res.output
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("mine")
    res = _invoke([str(tmp_path / "busy"), "--images", "40", "--eval-images", "30"])
    assert res.exit_code != 0 and "not empty" in res.output


def test_whole_rehearsal_small(tmp_path):
    work = tmp_path / "r"
    args = [str(work), "--images", "1000", "--eval-images", "200", "--parts", "4", "--train-steps", "30"]
    res = _invoke([*args, "--s3-steps", "6"])
    assert res.exit_code == 0, res.output
    record = json.loads((work / "rehearsal.json").read_text())
    stages = {r["stage"] for r in record["steps"]}
    assert stages == {"inputs", "convert", "vocab", "dedup", "train", "embed", "s3", "transfer"}
    assert all(r["wall_s"] > 0 and r["cpu_s"] > 0 and r["disk_bytes"] > 0 for r in record["steps"])
    results = record["results"]
    planted = record["settings"]["planted"]
    assert results["convert"]["converted"] == 1000 + planted == results["convert"]["expected"]
    for stage in ("dedup", "embed"):
        recall = results[stage]["recall"]
        assert recall["planted"] == planted and 0 <= recall["recall"] <= 1
        assert set(recall["by_edit"]) == {"crop", "reencode", "border"}
    train = results["train"]
    assert train["killed_at_step"] is not None and train["killed_epoch_step"] > 0 and train["resumed"]
    assert train["final_checkpoint"] == "step-000000030.pt"
    worlds = [s["world"] for s in train["first_batch"]]
    assert worlds == [2, 1] and all(s["first_batch_wait_s"] >= 0 for s in train["first_batch"])
    assert results["s3"]["first_batch"] and 0 <= results["transfer"]["top1"] <= 1
    convert = next(r for r in record["steps"] if r["step"] == "convert --engine ray")
    assert convert["predicted"]["value"] == 5.0 and convert["predicted"]["ratio"] > 0
    assert "convert --engine ray" in (work / "rehearsal.md").read_text()

    again = _invoke([*args, "--s3-steps", "6"])  # everything done: every step skipped, nothing rerun
    assert again.exit_code == 0, again.output
    assert again.output.count("done before, skipped") == len(record["steps"])


def test_redo_of_train_sets_the_earlier_run_aside(tmp_path):
    from tagstream.tools.bench.rehearsal_context import Context
    from tagstream.tools.bench.rehearsal_inputs import InputsSpec
    from tagstream.tools.bench.rehearsal_train import set_aside

    ctx = Context(tmp_path, InputsSpec.for_size(40, 30), parts=1, train_steps=6, s3_steps=1)
    set_aside_run = set_aside("runs/main", "s3-cache")
    set_aside_run(ctx)  # nothing there yet: nothing moved
    assert not any(tmp_path.iterdir())
    for k in (1, 2):
        ctx.path("runs", "main").mkdir(parents=True)
        (ctx.path("runs", "main") / "step-000000006.pt").write_bytes(b"run %d" % k)
        set_aside_run(ctx)
        assert (ctx.path("runs", f"main.earlier-{k}") / "step-000000006.pt").read_bytes() == b"run %d" % k
    assert not ctx.path("runs", "main").exists()
