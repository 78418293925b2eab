"""`tagstream convert --engine ray` on a real local Ray cluster (2 CPUs, one per module): the same records as a
one-process conversion and as `--part` + merge, a worker SIGKILLed mid-part changes nothing, a part that fails
for good is named with its input range after the others finish and a rerun redoes only it."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from click.testing import CliRunner

from tagstream.tools.cli import main
from tagstream.tools.convert.engine import convert
from tagstream.tools.convert.merge import merge
from tagstream.tools.convert.parts import PARTS_DIR, PartSpec, convert_part, part_root
from tagstream.tools.convert.ray_engine import PartsFailed, convert_on_ray
from tagstream.tools.verify.checks import verify
from tests.helpers.ray_faults import claimed, ray_runtime_env, request
from tests.helpers.records import dataset_records, partition_source, same_dataset_parts

SHARD = 2


@pytest.fixture(scope="module")
def faults(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module", autouse=True)
def cluster(faults):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=ray_runtime_env(faults))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return partition_source(tmp_path_factory.mktemp("ray_src"))


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "ds"
    convert(source, out, shard_size=SHARD)
    return out


def test_ray_equals_one_process_and_parts_despite_killed_workers(source, reference, faults, tmp_path):
    # part 1's worker dies after committing a shard (in the middle of its next one); part 0's in its first shard
    kills = [request(faults, PartSpec(1, 3).name, 1, 1, "kill"), request(faults, PartSpec(0, 3).name, 0, 1, "kill")]
    summary = convert_on_ray(source, tmp_path / "ray", parts=3, shard_size=SHARD)
    assert claimed(faults) == sorted(p.name + ".claimed" for p in kills)  # both workers really died
    assert summary.images == 13 and summary.processed == 18
    assert dataset_records(tmp_path / "ray") == dataset_records(reference)
    assert same_dataset_parts(tmp_path / "ray") == same_dataset_parts(reference)
    assert verify(tmp_path / "ray").ok
    for i in range(3):  # the same parts without Ray: the same dataset, byte for byte in every shard
        convert_part(source, tmp_path / "parts", PartSpec(i, 3), shard_size=SHARD)
    merge(tmp_path / "parts")
    for rel in ("manifest.json", "tags.tsv", "rejects.jsonl"):
        a = (tmp_path / "ray" / rel).read_text().replace(str(tmp_path / "ray"), "OUT")
        assert a == (tmp_path / "parts" / rel).read_text().replace(str(tmp_path / "parts"), "OUT")


def test_failed_part_named_and_rerun_redoes_only_it(source, reference, faults, tmp_path):
    out = tmp_path / "ds"
    request(faults, PartSpec(2, 3).name, 0, 1, "fail")
    with pytest.raises(PartsFailed, match=r"1 of 3 parts failed.*\n  part 2/3 \(inputs 12\.\.17\): OSError: injected"):
        convert_on_ray(source, out, parts=3, shard_size=SHARD)
    for i in range(2):  # the other parts finished and committed
        assert (part_root(out, PartSpec(i, 3)) / "part.json").exists()
    assert not (part_root(out, PartSpec(2, 3)) / "part.json").exists()
    # a rerun that converted parts 0 or 1 again would hit these
    traps = [request(faults, PartSpec(i, 3).name, 0, 0, "fail") for i in range(2)]
    res = CliRunner().invoke(
        main, ["convert", str(source), str(out), "--engine", "ray", "--shard-size", str(SHARD), "--no-progress"]
    )  # N is the recorded one
    assert res.exit_code == 0, res.output
    assert all(t.exists() for t in traps)
    for t in traps:
        t.unlink()
    assert "resumed after 12 of 18 inputs" in res.output and "images    13" in res.output
    assert not (out / PARTS_DIR).exists()
    assert dataset_records(out) == dataset_records(reference)
    res = CliRunner().invoke(main, ["convert", str(source), str(out), "--engine", "ray", "--shard-size", str(SHARD)])
    assert res.exit_code == 0 and "already a complete conversion" in res.output
