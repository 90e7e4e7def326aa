"""The `fastcredit train` command: outputs, argument errors, missing data, non-finite loss."""

import csv
import json
import os
import subprocess
import sys

import pytest

from fastcredit.app import data, train


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fastcredit", *args], capture_output=True,
                          text=True, cwd=cwd)


@pytest.mark.parametrize("method", ["bp", "fa", "kp", "dfa", "lra"])
def test_train_writes_metrics_and_plot_and_learns(tmp_path, method):
    pytest.importorskip("sklearn")
    out = tmp_path / method
    result = _cli("train", "--method", method, "--dataset", "digits", "--epochs", "2",
                  "--batch-size", "32", "--lr", "3e-3", "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "epoch 2:" in result.stdout
    records = json.loads((out / "metrics.json").read_text())["epochs"]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_loss", "train_accuracy", "test_accuracy", "samples_per_s", "alignment"):
        assert key in records[0]
    assert records[-1]["test_accuracy"] > 0.5  # chance is 0.1
    if method == "bp":
        assert all(abs(v - 1) < 1e-6 for v in records[-1]["alignment"].values())
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["test_accuracy"]) == records[1]["test_accuracy"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "magic"], "argument --method: invalid choice: 'magic'"),
        (["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
        (["--lr", "nan"], "argument --lr: must be a positive finite number, got nan"),
        (["--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
        (["--weight-decay", "-1"], "argument --weight-decay: must be a finite number >= 0, got -1"),
        (["--lr-milestones", "5,2"],
         "argument --lr-milestones: must be increasing positive epochs separated by commas"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message):
    result = _cli("train", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_missing_dataset_explains_how_to_get_it(tmp_path, monkeypatch):
    env_home = tmp_path / "home"
    result = subprocess.run(
        [sys.executable, "-m", "fastcredit", "train", "--dataset", "mnist", "--out",
         str(tmp_path / "o")],
        capture_output=True, text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(env_home),
             "FASTCREDIT_DATA": str(tmp_path / "none")})
    assert result.returncode == 1
    assert "not found" in result.stderr and "--download" in result.stderr


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    digits = data.load_digits()
    digits.x_train[5] = float("nan")  # one corrupt sample in the first batches
    monkeypatch.setattr(train, "resolve_dataset", lambda *args: digits)
    config = train.TrainConfig(dataset="digits", batch_size=512, out=str(tmp_path),
                               progress=False)
    with pytest.raises(train.TrainingError, match=r"non-finite loss \(nan\) at epoch 1, step"):
        train.train(config, log=lambda *_: None)


def test_lra_rejects_conv_models():
    with pytest.raises(train.TrainingError, match="method 'lra' supports --model mlp only"):
        train.build_model(train.TrainConfig(method="lra", model="convnet"), (8, 8), 10)


def _fashion_mnist_or_skip():
    """Skip when Fashion-MNIST is not installed, unless $FASTCREDIT_REQUIRE_FASHION_MNIST=1
    (set by .ci/run where apt can install it): then its absence is a failure."""
    try:
        data.load_idx("fashion-mnist")
    except data.DatasetNotFoundError as error:
        if os.environ.get("FASTCREDIT_REQUIRE_FASHION_MNIST") == "1":
            pytest.fail(f"FASTCREDIT_REQUIRE_FASHION_MNIST=1 but {error}")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.mark.parametrize("method", ["fa", "dfa"])
def test_train_on_real_fashion_mnist_beats_chance(tmp_path, method):
    _fashion_mnist_or_skip()
    result = _cli("train", "--dataset", "fashion-mnist", "--method", method, "--max-steps",
                  "300", "--threads", "1", "--out", str(tmp_path), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "on fashion-mnist (60000 train / 10000 test)" in result.stdout
    records = json.loads((tmp_path / "metrics.json").read_text())["epochs"]
    assert records[-1]["steps"] == 300
    assert records[-1]["test_accuracy"] > 0.7  # chance is 0.1; bp reaches ~0.8 here


@pytest.mark.parametrize("method", ["bp", "fa", "usf", "frsf", "brsf", "kp", "dfa"])
@pytest.mark.parametrize("model,shape", [("mlp", (8, 8)), ("convnet", (8, 8)),
                                         ("lenet", (28, 28))])
def test_every_model_and_method_builds_and_backpropagates(method, model, shape):
    import torch

    config = train.TrainConfig(method=method, model=model)
    net = train.build_model(config, shape, 10)
    loss = torch.nn.functional.cross_entropy(net(torch.randn(3, *shape)), torch.tensor([0, 1, 2]))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_required_fashion_mnist_fails_instead_of_skipping(monkeypatch):
    def missing(*_args, **_kwargs):
        raise data.DatasetNotFoundError("dataset 'fashion-mnist': train-images not found")

    monkeypatch.setattr(data, "load_idx", missing)
    monkeypatch.setenv("FASTCREDIT_REQUIRE_FASHION_MNIST", "1")
    with pytest.raises(pytest.fail.Exception, match="train-images not found"):
        _fashion_mnist_or_skip()
    monkeypatch.delenv("FASTCREDIT_REQUIRE_FASHION_MNIST")
    with pytest.raises(pytest.skip.Exception):
        _fashion_mnist_or_skip()


@pytest.mark.parametrize("method", ["bp", "kp"])
def test_weight_decay_and_milestones_reach_the_optimizer(method):
    import torch

    config = train.TrainConfig(method=method, optimizer="sgd", lr=0.1, weight_decay=0.01,
                               lr_milestones=(1, 3))
    model = train.build_model(config, (8, 8), 10)
    optimizer, schedule = train._optimizer(config, model)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
    lrs = []
    for _epoch in range(4):
        torch.nn.functional.cross_entropy(model(torch.randn(4, 8, 8)), torch.arange(4)).backward()
        optimizer.step()
        lrs.append(optimizer.param_groups[0]["lr"])
        if method == "kp":  # B's optimizer follows W's schedule
            assert optimizer.feedback_optimizer.param_groups[0]["lr"] == lrs[-1]
        schedule.step()
    assert lrs == pytest.approx([0.1, 0.01, 0.01, 0.001])
