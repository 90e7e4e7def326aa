"""The `fastcredit train` command: outputs, argument errors, missing data, non-finite loss."""

import csv
import json
import os
import subprocess
import sys

import pytest

from fastcredit.app import data, train
from datasets import installed_or_skip


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fastcredit", *args], capture_output=True,
                          text=True, cwd=cwd)


COMPARED = ["bp", "fa", "kp", "dfa", "lra"]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """One 2-epoch digits run of several methods, without a terminal (stderr is a pipe)."""
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("compare")
    result = _cli("train", "--method", *COMPARED, "--dataset", "digits", "--epochs", "2",
                  "--batch-size", "64", "--lr", "3e-3", "--alignment-every", "5", "--out",
                  str(out))
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.mark.parametrize("method", COMPARED)
def test_train_writes_metrics_and_plot_and_learns(comparison, method):
    root, result = comparison
    out = root / method
    assert f"== {method} " in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    records = metrics["epochs"]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_loss", "train_accuracy", "test_accuracy", "samples_per_s", "alignment"):
        assert key in records[0]
    assert records[-1]["test_accuracy"] > 0.5  # chance is 0.1
    if method == "bp":
        assert all(abs(v - 1) < 1e-6 for v in records[-1]["alignment"].values())
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["test_accuracy"]) == records[1]["test_accuracy"]
    assert int(rows[1]["steps"]) == records[1]["steps"] == 46  # 1437 digits / 64: 23 per epoch
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("method", COMPARED)
def test_steps_csv_has_one_row_per_step_with_periodic_alignment(comparison, method):
    root, _ = comparison
    with open(root / method / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 47))
    assert [int(r["epoch"]) for r in rows] == [1] * 23 + [2] * 23
    for r in rows:
        assert float(r["lr"]) == 3e-3
        assert 0 <= float(r["accuracy"]) <= 1 and 0 <= float(r["running_accuracy"]) <= 1
    # the running accuracy is the epoch's mean of the batch accuracies so far (batches of 64,
    # the last of each epoch 29)
    sizes = [64] * 22 + [29]
    first = rows[:23]
    correct = sum(round(float(r["accuracy"]) * n) for r, n in zip(first, sizes))
    assert float(first[-1]["running_accuracy"]) == pytest.approx(correct / 1437)
    # the epoch's mean loss, from the per-step losses
    metrics = json.loads((root / method / "metrics.json").read_text())["epochs"]
    mean = sum(float(r["loss"]) * n for r, n in zip(first, sizes)) / 1437
    assert metrics[0]["train_loss"] == pytest.approx(mean, rel=1e-12)
    measured = [int(r["step"]) for r in rows if r["alignment_1"] != ""]
    assert measured == list(range(5, 47, 5))


def test_methods_share_layer_names_initial_weights_and_outputs(comparison):
    root, _ = comparison
    layers = {m: json.loads((root / m / "metrics.json").read_text())["layers"] for m in COMPARED}
    assert all(names == layers["bp"] for names in layers.values())
    assert list(layers["bp"]) == ["1", "3", "5"]  # the plain MLP's module paths
    headers = {m: (root / m / "steps.csv").read_text().splitlines()[0] for m in COMPARED}
    assert len(set(headers.values())) == 1
    assert (root / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (root / "summary.md").read_text()
    table = [line for line in summary.splitlines() if line.startswith("| ")][1:]
    assert [line.split("|")[1].strip() for line in table] == COMPARED
    bp_row = table[0].split("|")
    assert bp_row[6].strip() == "1.00"  # time per step relative to backprop


def test_progress_lines_without_a_terminal(comparison):
    """Without a terminal: a line at least every 10 % of an epoch, ending at its last step."""
    _, result = comparison
    for method in COMPARED:
        for epoch in (1, 2):
            prefix = f"{method} epoch {epoch}: step "
            done = [int(line[len(prefix):].split("/")[0])
                    for line in result.stderr.splitlines() if line.startswith(prefix)]
            assert done[-1] == 23, (method, epoch, result.stderr)
            gaps = [b - a for a, b in zip([0, *done], done)]
            assert max(gaps) <= 3, (method, epoch, done)  # ceil(23 / 10) steps
    line = next(line for line in result.stderr.splitlines() if line.startswith("fa epoch 1"))
    assert "loss " in line and "steps/s" in line


def test_every_method_starts_from_the_same_weights():
    import torch

    weights = {}
    for method in train.METHODS:
        torch.manual_seed(3)
        net = train.build_model(train.TrainConfig(method=method), (8, 8), 10)
        weights[method] = {k: v for k, v in net.state_dict().items()
                           if k.endswith(("weight", "bias")) and k[0].isdigit()}
    assert sorted(weights["bp"]) == ["1.bias", "1.weight", "3.bias", "3.weight", "5.bias",
                                     "5.weight"]
    for method, state in weights.items():
        assert state.keys() >= weights["bp"].keys(), method
        for key, value in weights["bp"].items():
            assert torch.equal(state[key], value), (method, key)


def test_progress_is_a_tqdm_bar_on_a_terminal():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = train._EpochProgress(10, "fa epoch 1", True, stream)
    assert progress.bar is not None and not progress.lines
    progress.update(10, 0.5, 0.75, 640)
    progress.close()
    assert "fa epoch 1" in stream.getvalue() and "loss=0.5000" in stream.getvalue()


def test_progress_lines_leave_the_probe_time_out_of_the_rates(monkeypatch):
    import io

    clock = iter([100.0, 110.0])  # start, then the update: 10 s, of which 6 s were probes
    monkeypatch.setattr(train.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    progress = train._EpochProgress(8, "fa epoch 1", True, stream)
    progress.update(8, 0.5, 0.75, 512, excluded=6.0)
    assert "step 8/8 (100%)" in stream.getvalue()
    assert "2.0 steps/s  128 samples/s" in stream.getvalue()


def test_steps_csv_keeps_an_even_subsample_and_every_alignment_row():
    rows = [{"step": i, "alignment": {"1": 0.5} if i % 1000 == 0 else None}
            for i in range(1, 5001)]
    kept = train._subsample(rows, limit=2000)
    steps = [r["step"] for r in kept]
    assert steps[0] == 1 and steps[-1] == 5000
    assert {1000, 2000, 3000, 4000, 5000} <= set(steps)
    assert len(kept) <= 2000
    measured = {1000, 2000, 3000, 4000, 5000}
    assert set(steps) - measured == set(range(1, 5001, 3)) - measured


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "magic"], "argument --method: invalid choice: 'magic'"),
        (["--method", "fa", "dfa", "fa"], "argument --method: a method is named twice"),
        (["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
        (["--epochs", "abc"], "argument --epochs: must be a positive integer, got 'abc'"),
        (["--seed", "x"], "argument --seed: must be an integer with 0 <= seed < 2**64, got 'x'"),
        (["--lr", "nan"], "argument --lr: must be a positive number below 3.4e38"),
        (["--lr", "1e300"], "argument --lr: must be a positive number below 3.4e38"),
        (["--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
        (["--weight-decay", "-1"], "argument --weight-decay: must be a number >= 0"),
        (["--weight-decay", "1e300"], "argument --weight-decay: must be a number >= 0 and below"),
        (["--lr-milestones", "5,2"],
         "argument --lr-milestones: must be increasing positive epochs separated by commas"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message):
    result = _cli("train", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("fastcredit train:")


def test_help_gives_every_option_a_sentence_and_its_default():
    from fastcredit.app import cli

    parser = cli._parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, command in commands.items():
        text = command.format_help()
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (name, action.dest)
                assert "default" in command._get_formatter()._get_help_string(action) or (
                    "default" in action.help), (name, action.dest)
        if name == "train":
            for option in ("--method", "--epochs", "--threads", "--max-steps", "--out"):
                chunk = text.split("options:")[1].split(f"\n  {option}", 1)[1].split("\n  --")[0]
                assert "(default:" in chunk, (option, chunk)


def test_missing_dataset_explains_how_to_get_it(tmp_path, monkeypatch):
    env_home = tmp_path / "home"
    result = subprocess.run(
        [sys.executable, "-m", "fastcredit", "train", "--dataset", "mnist", "--out",
         str(tmp_path / "o")],
        capture_output=True, text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(env_home),
             "FASTCREDIT_DATA": str(tmp_path / "none")})
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not found" in result.stderr and "--download" in result.stderr


def _one_line_failure(capsys, argv):
    from fastcredit.app import cli

    assert cli.main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastcredit train: error: ")
    return lines[0]


def test_data_checksum_mismatch_is_one_line(tmp_path, capsys):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"not the registered file")
    line = _one_line_failure(capsys, ["train", "--dataset", "fashion-mnist", "--data-dir",
                                      str(tmp_path), "--out", str(tmp_path / "o")])
    assert "does not match the registered SHA-256" in line


def test_corrupt_gzip_file_is_one_line(tmp_path, capsys):
    (tmp_path / "mnist").mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / "mnist" / f"{stem}.gz").write_bytes(b"\x1f\x8b truncated")
    line = _one_line_failure(capsys, ["train", "--dataset", "mnist", "--data-dir",
                                      str(tmp_path), "--out", str(tmp_path / "o")])
    assert "not readable gzip data" in line


def test_failed_download_is_one_line(tmp_path, capsys, monkeypatch):
    import dataclasses

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FASTCREDIT_DATA", str(tmp_path / "none"))
    monkeypatch.setitem(data.REGISTRY, "mnist", dataclasses.replace(
        data.REGISTRY["mnist"], mirrors=("http://127.0.0.1:9/",)))  # nothing listens there
    monkeypatch.setattr(data, "search_dirs", lambda name, data_dir=None: [tmp_path / "none"])
    line = _one_line_failure(capsys, ["train", "--dataset", "mnist", "--download", "--out",
                                      str(tmp_path / "o")])
    assert "could not download train-images-idx3-ubyte for mnist: http://127.0.0.1:9/" in line


def test_unwritable_output_is_one_line(tmp_path, capsys):
    pytest.importorskip("sklearn")
    (tmp_path / "file").write_text("")
    line = _one_line_failure(capsys, ["train", "--dataset", "digits", "--max-steps", "1",
                                      "--out", str(tmp_path / "file" / "run")])
    assert "file" in line


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    digits = data.load_digits()
    digits.x_train[5] = float("nan")  # one corrupt sample in the first batches
    monkeypatch.setattr(train, "resolve_dataset", lambda *args: digits)
    config = train.TrainConfig(dataset="digits", batch_size=512, out=str(tmp_path),
                               progress=False)
    with pytest.raises(train.TrainingError, match=r"non-finite loss \(nan\) at epoch 1, step"):
        train.train(config, log=lambda *_: None)


def test_lenet_on_small_images_is_refused_before_any_method_trains(tmp_path):
    result = _cli("train", "--method", "bp", "lra", "--model", "lenet", "--dataset", "digits",
                  "--out", str(tmp_path))
    assert result.returncode == 1 and not (tmp_path / "bp").exists()
    assert result.stderr.strip() == (
        "fastcredit train: error: --model lenet needs images of at least 16x16, the dataset's "
        "are (8, 8); use --model mlp, convnet or resnet")


def _fashion_mnist_or_skip():
    """Skip when Fashion-MNIST is not installed, unless $FASTCREDIT_REQUIRE_FASHION_MNIST=1
    (set by .ci/run where apt can install it): then its absence is a failure."""
    installed_or_skip(lambda: data.load_idx("fashion-mnist"),
                      "FASTCREDIT_REQUIRE_FASHION_MNIST", "dataset-fashion-mnist")


@pytest.mark.parametrize("method", ["fa", "dfa"])
def test_train_on_real_fashion_mnist_beats_chance(tmp_path, method):
    _fashion_mnist_or_skip()
    result = _cli("train", "--dataset", "fashion-mnist", "--method", method, "--max-steps",
                  "300", "--threads", "1", "--out", str(tmp_path), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "on fashion-mnist (60000 train / 10000 test)" in result.stdout
    assert "epoch 1 (partial: 300/938 steps)" in result.stdout
    records = json.loads((tmp_path / method / "metrics.json").read_text())["epochs"]
    assert records[-1]["steps"] == 300
    assert records[-1]["test_accuracy"] > 0.7  # chance is 0.1; bp reaches ~0.8 here


@pytest.mark.parametrize("method", train.METHODS)
@pytest.mark.parametrize("model,shape", [("mlp", (8, 8)), ("convnet", (8, 8)),
                                         ("lenet", (28, 28)), ("resnet", (8, 8))])
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
