"""`fastcredit reproduce`: the claims each experiment tests hold at step one, and the command
writes its results."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import fastcredit
from fastcredit import diagnostics
from fastcredit.app import data, reproduce
from fastcredit.nn import Bottleneck


def _fake_images(n=32, side=28, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, side, side, generator=g)
    y = torch.arange(n) % classes
    return data.Dataset("fake", x, y, x[:16], y[:16])


def _runs(name):
    return {run.id: run for run in reproduce.REPRODUCTIONS[name].runs(False)}


def _hidden_weight_grads(model, dataset):
    """Gradients of every hidden weight (all but the last weight) after one backward."""
    loss = F.cross_entropy(model(dataset.x_train), dataset.y_train)
    loss.backward()
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    return [w.grad for w in weights[:-1]]


def test_zero_init_backprop_gets_no_hidden_gradient_but_dfa_and_fa_do():
    runs, dataset = _runs("dfa-zero-init"), _fake_images()
    for run_id in ("dfa-zero", "fa-zero", "bp-zero"):
        model = reproduce.build_model(runs[run_id], dataset)
        assert all(not p.any() for n, p in model.named_parameters()
                   if n.rsplit(".", 1)[-1] in ("weight", "bias"))
        first = _hidden_weight_grads(model, dataset)[0]
        if run_id == "bp-zero":  # h = tanh(0) = 0 above, W = 0: nothing reaches layer 1
            assert first is None or not first.any()
        else:  # the feedback path is independent of W, so layer 1 learns at once
            assert first.abs().sum() > 0


def test_lra_null_and_signum_get_hidden_updates_backprop_does_not():
    runs, dataset = _runs("lra-null-signum"), _fake_images()
    for run_id, learns in (("lra-tanh-null", True), ("lra-sign", True),
                           ("lra-sign-null", True), ("bp-tanh-null", False),
                           ("bp-sign", False), ("readout-sign", False),
                           ("readout-sign-null", False), ("readout-tanh", False)):
        model = reproduce.build_model(runs[run_id], dataset)
        grads = _hidden_weight_grads(model, dataset)
        moved = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert moved == learns, run_id
        if run_id.startswith("readout"):  # the control trains the output layer only (from
            assert list(model)[-1].bias.grad.abs().sum() > 0  # null init, W's grad is 0)


def test_lra_conv_runs_train_hidden_layers_except_the_readout_control():
    runs, dataset = _runs("lra-conv"), _fake_images()
    for run_id, learns in (("lra-conv", True), ("readout-conv", False), ("bp-conv", True),
                           ("lra-resnet", True), ("readout-resnet", False), ("bp-resnet", True)):
        model = reproduce.build_model(runs[run_id], dataset)
        grads = _hidden_weight_grads(model, dataset)
        assert any(g is not None and g.abs().sum() > 0 for g in grads) == learns, run_id


def test_the_backprop_control_is_the_same_network_under_backprop():
    """bp-conv: the LRA conv net's layers under backprop mode, with the plain names; its
    gradients are the ones the LRA net gets inside ``backprop()``, not LRA's own."""
    runs, dataset = _runs("lra-conv"), _fake_images()
    control = reproduce.build_model(runs["bp-conv"], dataset)
    method = reproduce.build_model(runs["lra-conv"], dataset)
    assert [n for n, _ in control.named_parameters()] == [n for n, _ in method.named_parameters()]
    assert control.state_dict().keys() == method.state_dict().keys()
    got = _hidden_weight_grads(control, dataset)
    lra = _hidden_weight_grads(method, dataset)
    method.zero_grad()
    with fastcredit.nn.mode.backprop():
        want = _hidden_weight_grads(method, dataset)
    for g, w, l in zip(got, want, lra):
        torch.testing.assert_close(g, w)
        assert not torch.allclose(g, l)
    assert not fastcredit.nn.mode.backprop_active()
    with pytest.raises(RuntimeError):  # a forward that raises leaves the mode as it was
        control(dataset.x_train[:, :1])
    assert not fastcredit.nn.mode.backprop_active()


def test_bottleneck_runs_restrict_layer_two_and_probe_tanh_outputs():
    dataset = _fake_images(n=64)
    for run in reproduce.REPRODUCTIONS["dfa-bottleneck"].runs(False)[:2]:
        model = reproduce.build_model(run, dataset)
        bottleneck = model[3]  # convert() keeps the plain Sequential's indices
        assert isinstance(bottleneck, Bottleneck)
        b = run.info["b"]  # of 800 units: b/800 of each parameter's entries train
        assert bottleneck.trainable_entries() == {"weight": 800 * b, "bias": b}
        output = model[7].dfa_output  # Launay's feedback: one matrix, softmax - onehot
        assert (output.preset, output.feedback, output.error_scale) == (
            "launay2019", "shared", "batch")
        assert [e.path for e in model.conversion_report.converted] == [*run.probe, "7"]
        report = diagnostics.alignment(model, dataset.x_test, dataset.y_test, modules=run.probe)
        assert set(report) == set(run.probe)
        for row in report.values():  # a DFA signal: a cosine, but not backprop's gradient
            assert -1 <= row["signal_cosine"] < 0.999


def test_every_reproduction_builds_and_has_unique_run_ids():
    for name, reproduction in reproduce.REPRODUCTIONS.items():
        for full in (False, True):
            ids = [run.id for run in reproduction.runs(full)]
            assert len(ids) == len(set(ids)) > 0, name
            assert reproduction.schedule(full).startswith("full" if full else "short")
    lenet = _runs("biotorch-lenet")
    assert len(lenet) == 12 and lenet["fashion-mnist-fa"].info["published_error"] == 13.06


def test_reproduce_command_writes_results(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "r"
    result = subprocess.run(
        [sys.executable, "-m", "fastcredit", "reproduce", "fashion-mnist-methods", "--dataset",
         "digits", "--only", "a", "--max-steps", "3", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    ids = [row["id"] for row in results["runs"]]
    assert ids == ["fa", "dfa", "lra"]  # the method ids containing "a"
    assert results["schedule"] == "short" and results["overrides"]["dataset"] == "digits"
    assert all(row["steps"] == 3 and row["dataset"] == "digits" for row in results["runs"])
    table = (out / "results.md").read_text()
    assert "| dfa | dfa | digits | 1 (3) |" in table and "Settings overridden" in table
    assert (out / "lra" / "metrics.json").is_file()


def test_epochs_replace_every_runs_schedule_and_are_reported(tmp_path):
    pytest.importorskip("sklearn")
    results = reproduce.run("lra-conv", out=tmp_path, only="readout-resnet", dataset="digits",
                            epochs=2, threads=1, log=lambda *_: None)
    (row,) = results["runs"]
    assert row["epochs"] == 2 and row["steps"] == 2 * 29  # ceil(1437 / 50) steps per epoch
    assert results["configs"]["readout-resnet"]["epochs"] == 2
    table = (tmp_path / "results.md").read_text()
    assert "Settings overridden** (dataset = digits, epochs = 2)" in table
    assert "Schedule: **2 epochs (--epochs) instead of the short: 1 epoch;" in table


def test_reproduce_rejects_an_unknown_run_filter_with_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "fastcredit", "reproduce", "dfa-zero-init", "--only", "nope"],
        capture_output=True, text=True, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--only: 'nope' matches no run of dfa-zero-init" in lines[0]
