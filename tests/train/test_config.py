"""TrainConfig: recipes load, overrides are typed, unknown keys and wrong types are refused by name."""

from __future__ import annotations

import json

import pytest

from tagstream.train.config import TrainConfig, load_config, parse_override, recipe_names

REQUIRED = ["data.dataset=/data/ds", "data.vocab=v1", "run.out_dir=/runs/x"]


def test_every_shipped_recipe_resolves():
    names = recipe_names()
    assert {
        "tiny-cpu",
        "resnet50",
        "resnext101_32x8d-wsl",
        "resnext101_32x16d-wsl",
        "resnext101_32x32d-wsl",
        "resnext101_32x48d-wsl",
    } <= set(names)
    for name in names:
        c = load_config(name, REQUIRED)
        assert c.data.dataset == "/data/ds"
    wsl = load_config("resnext101_32x48d-wsl", REQUIRED)
    assert wsl.model.name == "resnext101_32x48d"
    assert wsl.batch.global_size == 8064 and wsl.lr == pytest.approx(0.1 / 256 * 8064)
    assert wsl.batch.per_rank(336) == 24


def test_overrides_are_parsed_by_type():
    c = load_config(
        "tiny-cpu",
        [
            *REQUIRED,
            "run.steps=7",
            "optim.base_lr=0.5",
            "run.bf16=false",
            "data.masks=dedup,near",
            "schedule.milestones=[0.5, 0.75]",
            "run.threads=none",
            "data.sampling=power:0.3",
            "optim.weight_decay=0",
        ],
    )
    assert c.run.steps == 7 and c.optim.base_lr == 0.5 and c.run.bf16 is False
    assert c.data.masks == ("dedup", "near") and c.schedule.milestones == (0.5, 0.75)
    assert c.run.threads is None and c.data.sampling == "power:0.3"
    assert isinstance(c.optim.weight_decay, float)


def test_later_override_wins_and_recipe_is_overridden():
    c = load_config("tiny-cpu", [*REQUIRED, "model.name=resnet18", "model.name=resnet34"])
    assert c.model.name == "resnet34"


@pytest.mark.parametrize(
    "item, message",
    [
        ("run.stepz=3", r"unknown key\(s\) \['run.stepz'\]; allowed in \[run\]: \[.*'steps'"),
        ("trainer.steps=3", r"unknown section 'trainer'; allowed: \['batch', 'data'"),
        ("run.steps=three", r"run.steps: expected int, got 'three'"),
        ("run.steps=2.5", r"run.steps: expected int, got 2.5"),
        ("run.bf16=1", r"run.bf16: expected bool, got 1"),
        ("optim.base_lr=fast", r"optim.base_lr: expected float"),
        ("data.masks=[1, 2]", r"data.masks\[0\]: expected str, got 1"),
        ("model.name=resnet51", r"model.name='resnet51' is not one of \[.*'resnet50'"),
        ("model.loss=hinge", r"model.loss='hinge' is not one of \('softmax', 'sigmoid'\)"),
        ("schedule.kind=linear", r"schedule.kind='linear' is not one of \('cosine', 'step', 'constant'\)"),
        ("data.sampling=sqrtt", r"sampling 'sqrtt' is not one of"),
        ("run.device=tpu", r"run.device='tpu' is not one of \('auto', 'cpu', 'cuda'\)"),
        ("schedule.milestones=[0.8, 0.2]", r"milestones=\(0.8, 0.2\) must be increasing"),
        ("run.eval_every=10", r"run.eval_every=10 needs a held-out split"),
        ("batch.global_size=0", r"batch.global_size=0 and grad_accum=1 must be >= 1"),
        ("steps=3", r"must look like section.key=value"),
        ("data.cpu_decoder=pillow", r"data.cpu_decoder='pillow' is not one of \('auto', 'turbo', 'dali'\)"),
        ("data.combine=median", r"data.combine='median' is not one of \('sum', 'mean', 'max'\)"),
        (
            "data.partitions=0",
            r"data.partitions=0 must be a whole number in \[1, 1048576\] \(or unset: the world size\)",
        ),
        ("data.image_size=4", r"data.image_size=4 must be a whole number of pixels >= 8"),
        ("data.one_pass=true", r"^data.one_pass=True needs data.sampling='natural', got 'sqrt': [^\n]*$"),
        ("data.one_pass=1", r"data.one_pass: expected bool, got 1"),
    ],
)
def test_refusals_name_the_key_and_the_allowed(item, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [*REQUIRED, item])


def test_required_settings():
    with pytest.raises(ValueError, match=r"data.dataset is required"):
        load_config("tiny-cpu", ["data.vocab=v1", "run.out_dir=/x"])
    with pytest.raises(ValueError, match=r"run.out_dir is required"):
        load_config("tiny-cpu", ["data.dataset=/d", "data.vocab=v1"])


def test_unknown_keys_in_a_recipe_file(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[model]\nname = "resnet18"\nwidth = 3\n')
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['model.width'\]"):
        load_config(path, REQUIRED)
    path.write_text("[optimizer]\nbase_lr = 0.1\n")
    with pytest.raises(ValueError, match=r"unknown config section\(s\) \['optimizer'\]"):
        load_config(path, REQUIRED)
    path.write_text('[run]\nsteps = "ten"\n')
    with pytest.raises(ValueError, match=r"run.steps: expected int, got 'ten' \(str\)"):
        load_config(path, REQUIRED)
    path.write_text("[run\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(path, REQUIRED)
    with pytest.raises(ValueError, match=r"neither a file nor a shipped recipe; recipes: \[.*'tiny-cpu'"):
        load_config(tmp_path / "missing.toml", REQUIRED)


def test_batch_split_over_ranks():
    c = load_config(None, [*REQUIRED, "batch.global_size=96", "batch.grad_accum=2"])
    assert c.batch.per_rank(4) == 12
    with pytest.raises(ValueError, match=r"global_size=96 is not divisible by world size 5 x grad_accum 2 = 10"):
        c.batch.per_rank(5)


def test_json_round_trip_is_exact():
    c = load_config("resnext101_32x16d-wsl", REQUIRED)
    again = TrainConfig.from_dict(json.loads(c.to_json()))
    assert again == c
    assert again.to_json() == c.to_json()


def test_parse_override_reads_toml_values_else_text():
    assert parse_override("run.steps=10") == ("run", "steps", 10)
    assert parse_override("data.dataset=/a/b=c") == ("data", "dataset", "/a/b=c")
    assert parse_override('data.vocab="v1"') == ("data", "vocab", "v1")


def test_loader_settings_reach_the_loader():
    from tagstream.loader.pipeline.source import source_decodes
    from tagstream.train.loading import loader_config

    config = load_config(
        "tiny-cpu",
        [*REQUIRED, "data.cpu_decoder=dali", "data.antialias=false", "data.workers=3", "data.dct_scaling=false"],
    )
    lc = loader_config(config, mode="train", batch_size=8, device="cpu", device_id=0)
    assert (lc.cpu_decoder, lc.antialias, lc.workers, lc.dct_scaling) == (
        "dali",
        False,
        3,
        False,
    ) and not source_decodes(lc.device, lc.cpu_decoder)
    one_pass = load_config(
        "tiny-cpu", [*REQUIRED, "data.sampling=natural", "data.one_pass=true", "data.drop_last=true"]
    )
    for mode in ("train", "eval"):  # eval is one pass in order anyway
        lc = loader_config(one_pass, mode=mode, batch_size=8, device="cpu", device_id=0)
        assert (lc.sampling, lc.one_pass, lc.drop_last) == ("natural", True, True)
