"""Linear probe against closed-form Bayes accuracies; metrics against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tagstream.train.metrics import mean_average_precision
from tagstream.train.probe import ProbeConfig, fit_linear_probe, per_class_accuracy, stratified_split, topk_accuracy
from tests.helpers.transfer_data import downstream_datasets, imagefolder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _affine(z: np.ndarray, a: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return z @ a.T + shift


def test_two_gaussians_reach_bayes_accuracy():
    """Equal-covariance Gaussians at Mahalanobis distance Delta: Bayes accuracy = Phi(Delta / 2).

    The features are seen through a random invertible affine map (anisotropic, shifted): the Bayes
    rate does not change, so a probe that standardises and fits correctly must still reach it.
    """
    rng = np.random.default_rng(1)
    d, delta, n_train, n_test = 8, 2.0, 3000, 20000
    mu = np.zeros(d)
    mu[0] = delta / 2

    def sample(n):
        y = rng.integers(0, 2, n)
        z = rng.standard_normal((n, d)) + np.where(y[:, None] == 1, mu, -mu)
        return z, y

    a = rng.standard_normal((d, d)) * np.array([10.0, 0.1, 1, 1, 1, 1, 1, 3])
    shift = rng.normal(50, 5, d)
    ztr, ytr = sample(n_train)
    zte, yte = sample(n_test)
    probe = fit_linear_probe(_affine(ztr, a, shift), ytr, num_classes=2)
    acc = topk_accuracy(probe.scores(_affine(zte, a, shift)), yte, k=1)
    bayes = _phi(delta / 2)  # 0.8413
    # test-set standard error ~0.0026; estimation loss of 9 parameters from 3000 points ~0.002
    assert acc == pytest.approx(bayes, abs=0.012)
    assert acc <= bayes + 0.012


def test_orthogonal_gaussians_multiclass_bayes_accuracy():
    """K classes with means a*e_k and identity covariance: P(correct) = ∫ phi(z) Phi(z + a)^(K-1) dz."""
    rng = np.random.default_rng(2)
    k, d, a, n_per = 5, 6, 1.5, 800
    means = np.zeros((k, d))
    means[np.arange(k), np.arange(k)] = a

    def sample(n):
        y = rng.integers(0, k, n)
        return rng.standard_normal((n, d)) + means[y], y

    xtr, ytr = sample(k * n_per)
    xte, yte = sample(20000)
    z = np.linspace(-9, 9, 20001)
    dens = np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + np.vectorize(math.erf)((z + a) / math.sqrt(2)))
    bayes = float(np.trapezoid(dens * cdf ** (k - 1), z))
    probe = fit_linear_probe(xtr, ytr, num_classes=k)
    acc = topk_accuracy(probe.scores(xte), yte, k=1)
    assert acc == pytest.approx(bayes, abs=0.015)
    assert topk_accuracy(probe.scores(xte), yte, k=5) == 1.0


def test_random_features_give_chance():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 16))
    y = rng.integers(0, 4, 2000)
    probe = fit_linear_probe(x[:1000], y[:1000], num_classes=4)
    acc = topk_accuracy(probe.scores(x[1000:]), y[1000:], k=1)
    assert acc == pytest.approx(0.25, abs=0.05)


def test_weight_decay_selected_on_validation_and_reported():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((400, 50))
    y = (x[:, 0] > 0).astype(np.int64)
    probe = fit_linear_probe(x, y, num_classes=2, config=ProbeConfig(weight_decays=(1e-4, 1e-1, 10.0)))
    assert set(probe.val_scores) == {"0.0001", "0.1", "10.0"}
    assert probe.weight_decay == max(sorted((1e-4, 1e-1, 10.0), reverse=True), key=lambda w: probe.val_scores[str(w)])


def test_multilabel_probe_map():
    rng = np.random.default_rng(5)
    n, c = 3000, 4
    y = (rng.random((n, c)) < 0.3).astype(np.float64)
    x = y * 3.0 + rng.standard_normal((n, c))  # each label visible in its own feature
    probe = fit_linear_probe(x[:2000], y[:2000], num_classes=c, task="multi")
    m = mean_average_precision(probe.scores(x[2000:]), y[2000:] > 0)
    # a score on x_c alone ranks positives (mean 3) over negatives (mean 0): AUC = Phi(3/sqrt2) = 0.983
    assert m > 0.9
    noise = mean_average_precision(rng.standard_normal((1000, c)), y[2000:] > 0)
    assert noise < 0.45


def test_constant_feature_and_bad_input():
    x = np.column_stack([np.ones(20), np.arange(20.0)])
    y = (np.arange(20) >= 10).astype(np.int64)
    probe = fit_linear_probe(x, y, num_classes=2, config=ProbeConfig(weight_decays=(1e-4,)))
    assert np.isfinite(probe.scores(x)).all()
    assert topk_accuracy(probe.scores(x), y, k=1) == 1.0
    with pytest.raises(ValueError, match="task"):
        fit_linear_probe(x, y, num_classes=2, task="regression")
    with pytest.raises(ValueError, match="labels must lie"):
        fit_linear_probe(x, y + 5, num_classes=2)
    with pytest.raises(ValueError, match="weight_decays"):
        ProbeConfig(weight_decays=())


def test_topk_and_per_class_accuracy_by_hand():
    s = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    y = np.array([1, 1, 0, 0])
    assert topk_accuracy(s, y, k=1) == 0.5
    assert topk_accuracy(s, y, k=2) == 0.75
    assert topk_accuracy(s, y, k=10) == 1.0
    np.testing.assert_allclose(per_class_accuracy(s, y, 4), [0.5, 0.5, np.nan, np.nan])


def test_stratified_split_keeps_every_class_in_train():
    y = np.array([0] * 10 + [1] * 2 + [2])
    tr, va = stratified_split(y, fraction=0.5, seed=0)
    assert set(y[tr]) == {0, 1, 2}
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)


# -- the transfer protocol on converted ImageFolder datasets ---------------------------------


@pytest.fixture
def downstream(tmp_path):
    return downstream_datasets(tmp_path)


def test_transfer_cli_linear_probe_with_random_baseline(downstream, tmp_path):
    from click.testing import CliRunner

    from tagstream.tools.cli import main

    train_ds, eval_ds = downstream
    out = tmp_path / "report.json"
    res = CliRunner().invoke(
        main,
        [
            "transfer",
            "--train",
            str(train_ds),
            "--eval",
            str(eval_ds),
            "--model",
            "regnet_y_tiny",
            "--image-size",
            "32",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "built vocabulary 'labels'" in res.output and "random" in res.output
    report = json.loads(out.read_text())
    assert report["task"] == "single" and sorted(report["classes"]) == ["blue", "green", "red"]
    r = report["results"]["random"]
    assert r["images"] == 15 and r["train_images"] == 27
    # flat colours are separable even by random conv features; a wrong train/eval class mapping would score ~1/3
    assert r["top1"] >= 0.9 and r["top5"] == 1.0
    assert set(r["per_class_accuracy"]) == {"red", "green", "blue"}


def test_transfer_finetune_from_a_checkpoint(downstream, tmp_path):
    from tagstream.tools.vocab.build import VocabOptions, build_vocab
    from tagstream.train.checkpoint import latest_checkpoint
    from tagstream.train.loop import main
    from tagstream.train.transfer import FinetuneConfig, TransferConfig, run_transfer
    from tagstream.train.transfer_report import format_table
    from tests.helpers.train_fakes import fake_factory, fake_run_config

    train_ds, eval_ds = downstream
    for ds in downstream:
        build_vocab(ds, "labels", VocabOptions())
    main(fake_run_config(tmp_path / "run", "data.image_size=32", "run.steps=1"), loader_factory=fake_factory)
    ckpt = latest_checkpoint(tmp_path / "run")
    cfg = TransferConfig(
        train=str(train_ds),
        eval=str(eval_ds),
        checkpoint=str(ckpt),
        mode="finetune",
        baseline="random",
        workers=0,
        device="cpu",
        finetune=FinetuneConfig(epochs=2, batch_size=8, lr=0.05, layer_decay=0.5),
    )
    report = run_transfer(cfg, out=tmp_path / "ft.json")
    assert set(report["results"]) == {"pretrained", "random"}
    for r in report["results"].values():
        assert r["steps"] == 2 * -(-27 // 8) and r["images"] == 15  # one-pass epochs: 27 images, batches of 8
        assert np.isfinite(r["last_loss"]) and 0 <= r["top1"] <= 1
        # layer-wise decay: the head at the given rate, each block below at half the rate of the one above
        rates = r["learning_rates"]
        assert r["layer_decay"] == 0.5 and len(rates) >= 3 and max(rates) == pytest.approx(0.05)
        assert all(a == pytest.approx(b / 2) for a, b in zip(rates, rates[1:]))
    table = format_table(report)
    assert "pretrained" in table and "finetune" in table
    assert json.loads((tmp_path / "ft.json").read_text())["mode"] == "finetune"


def test_transfer_refuses_eval_classes_missing_from_train(tmp_path):
    from tagstream.tools.convert.engine import convert
    from tagstream.tools.vocab.build import VocabOptions, build_vocab
    from tagstream.train.transfer import TransferConfig, run_transfer

    convert(imagefolder(tmp_path / "a", {"red": 3, "green": 3}, 0), tmp_path / "tr", format="imagefolder")
    convert(imagefolder(tmp_path / "b", {"red": 2, "blue": 2}, 1), tmp_path / "ev", format="imagefolder")
    for ds in ("tr", "ev"):
        build_vocab(tmp_path / ds, "labels", VocabOptions())
    cfg = TransferConfig(train=str(tmp_path / "tr"), eval=str(tmp_path / "ev"), model="regnet_y_tiny", workers=0)
    with pytest.raises(ValueError, match="blue"):
        run_transfer(cfg)
    with pytest.raises(ValueError, match="mode"):
        TransferConfig(train="a", eval="b", model="resnet18", mode="knn")
    with pytest.raises(ValueError, match="checkpoint"):
        TransferConfig(train="a", eval="b")


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["linear", "finetune"])
def test_transfer_on_gpu(downstream, tmp_path, mode):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from tagstream.tools.vocab.build import VocabOptions, build_vocab
    from tagstream.train.transfer import FinetuneConfig, TransferConfig, run_transfer

    for ds in downstream:
        build_vocab(ds, "labels", VocabOptions())
    cfg = TransferConfig(
        train=str(downstream[0]),
        eval=str(downstream[1]),
        model="regnet_y_tiny",
        image_size=32,
        mode=mode,
        workers=1,
        device="cuda",
        finetune=FinetuneConfig(epochs=2, batch_size=8, lr=0.05),
    )
    r = run_transfer(cfg)["results"]["random"]
    assert r["images"] == 15
    if mode == "linear":
        assert r["top1"] >= 0.9
    else:
        assert r["steps"] == 2 * (27 // 8) and np.isfinite(r["last_loss"])


def test_transfer_help_shows_an_example():
    from click.testing import CliRunner

    from tagstream.tools.cli import main

    out = CliRunner().invoke(main, ["transfer", "--help"]).output
    assert "Example" in out and "tagstream transfer --checkpoint" in out and "--layer-decay" in out


def test_cli_refuses_a_layer_decay_outside_0_1(downstream, tmp_path):
    from click.testing import CliRunner

    from tagstream.tools.cli import main

    train_ds, eval_ds = downstream
    res = CliRunner().invoke(
        main,
        [
            "transfer",
            "--train",
            str(train_ds),
            "--eval",
            str(eval_ds),
            "--model",
            "regnet_y_tiny",
            "--mode",
            "finetune",
            "--layer-decay",
            "1.5",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "r.json"),
        ],
    )
    assert res.exit_code != 0 and "0 < layer_decay <= 1" in res.output and "Traceback" not in res.output


def test_transfer_multilabel_reports_map(tiny_dataset, tmp_path):
    from tagstream.tools.vocab.build import VocabOptions, build_vocab
    from tagstream.train.transfer import TransferConfig, run_transfer
    from tagstream.train.transfer_report import format_table

    # every image carries "all", "mod3_<i%3>" and "mod5_<i%5>": a multi-label task
    train_ds, eval_ds = tiny_dataset(30, shard_size=7), tiny_dataset(15, shard_size=4)
    for ds in (train_ds, eval_ds):
        build_vocab(ds, "labels", VocabOptions())
    cfg = TransferConfig(train=str(train_ds), eval=str(eval_ds), model="regnet_y_tiny", image_size=32, workers=0)
    report = run_transfer(cfg, out=tmp_path / "m.json")
    assert report["task"] == "multi"
    r = report["results"]["random"]
    assert r["images"] == 15 and 0.0 <= r["mAP"] <= 1.0
    assert r["per_class_ap"]["all"] == 1.0  # a class every image carries ranks only positives
    assert set(r["per_class_ap"]) == {"all", "mod3_0", "mod3_1", "mod3_2"} | {f"mod5_{k}" for k in range(5)}
    assert "mAP" in format_table(report)
    assert json.loads((tmp_path / "m.json").read_text())["results"]["random"]["mAP"] == pytest.approx(r["mAP"])


def test_a_failed_transfer_takes_away_the_vocabularies_it_built(tiny_dataset, tmp_path):
    from click.testing import CliRunner

    from tagstream.loader.data.dataset import Dataset
    from tagstream.tools.cli import main
    from tagstream.tools.vocab.build import VocabOptions, build_vocab

    train_ds, eval_ds = tiny_dataset(12, shard_size=5), tiny_dataset(8, shard_size=4)
    build_vocab(eval_ds, "labels", VocabOptions())  # the user's own: stays
    # multi-label tiny datasets and low-shot probes: refused after the vocabularies are built
    res = CliRunner().invoke(
        main,
        [
            "transfer",
            "--train",
            str(train_ds),
            "--eval",
            str(eval_ds),
            "--model",
            "regnet_y_tiny",
            "--shots",
            "1",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "r.json"),
        ],
    )
    assert res.exit_code != 0 and "single-label" in res.output, res.output
    assert f"removed the vocabulary 'labels' built on {train_ds}" in res.output
    assert Dataset(train_ds).vocab_names() == [] and Dataset(eval_ds).vocab_names() == ["labels"]
