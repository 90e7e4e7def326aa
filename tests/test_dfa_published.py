"""DFA as the published code runs it (issue #20): where convert puts the feedback points in a
conv net, the error scale, and each paper's preset, pinned against the rule written out by
hand from ALGORITHMS.md §3.4, §4.1 and §5 in float64."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from resnet import TinyResNet
from torch import nn

import fastcredit
from fastcredit.nn import DFAOutput, DFAPoint, dfa_points

C = 5


def _conv_net():
    """conv -> tanh -> maxpool -> conv -> tanh -> maxpool -> flatten -> linear -> tanh ->
    linear, input [N, 1, 8, 8]."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16, 6), nn.Tanh(), nn.Linear(6, C)).double()


def _batch(n=4):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 8, 8, dtype=torch.float64, generator=generator)
    return x, torch.tensor([0, 3, 1, 4])[:n]


def _softmax_minus_onehot(logits, y):
    return torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)


def test_convert_puts_points_after_each_pool_and_the_hidden_linears_activation():
    model = fastcredit.convert(_conv_net(), "dfa")
    report = model.conversion_report
    assert [e.path for e in report.converted] == ["2", "5", "8", "9"]
    assert report.blocks == {"2": ["0"], "5": ["3"], "8": ["7"], "output": ["9"]}
    model(_batch()[0])
    assert [p.features for p in dfa_points(model)] == [3 * 4 * 4, 4 * 2 * 2, 6]
    # Today's variant on request: on the activations, over the unpooled maps.
    before = fastcredit.convert(_conv_net(), "dfa", placement="after_activation")
    assert [e.path for e in before.conversion_report.converted] == ["1", "4", "8", "9"]
    before(_batch()[0])
    assert [p.features for p in dfa_points(before)] == [3 * 8 * 8, 4 * 4 * 4, 6]


def test_points_move_over_dropout_and_norms_but_not_a_trailing_reshape():
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Dropout(0.5), nn.BatchNorm1d(5),
                        nn.Identity(), nn.Linear(5, 3), nn.Tanh(), nn.Flatten(), nn.Dropout(),
                        nn.Flatten(), nn.Linear(3, 2))
    report = fastcredit.convert(net, "dfa").conversion_report
    assert [e.path for e in report.converted] == ["3", "8", "10"]
    assert report.blocks == {"3": ["0", "3"], "8": ["5"], "output": ["10"]}
    with pytest.raises(ValueError, match="unknown placement 'after_pool'"):
        fastcredit.convert(_conv_net(), "dfa", placement="after_pool")


def test_launay2019_preset_projects_softmax_minus_onehot_through_one_shared_matrix():
    """The acceptance test of issue #20: with preset="launay2019" every hidden block gets
    (softmax - onehot) @ B_full[:, :d_l] * sqrt(D_max / d_l), B_full = R / sqrt(C * D_max)
    with R one N(0, 1) matrix, delivered after each pool."""
    plain = _conv_net()
    model = fastcredit.convert(copy.deepcopy(plain), "dfa", preset="launay2019", seed=11)
    output = model[9].dfa_output
    x, y = _batch()
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()

    # Hand computation on the unconverted copy.
    params = dict(plain.named_parameters())
    h1 = plain[0:3](x)
    h2 = plain[3:6](h1.detach())
    a3 = plain[7](plain[6](h2.detach()))
    h3 = torch.tanh(a3)
    logits = plain[9](h3.detach())
    s = _softmax_minus_onehot(logits.detach(), y)  # no 1/N
    widths = [48, 16, 6]
    d_max = max(widths)
    seed = output.point_seed(0)
    assert {output.point_seed(i) for i in range(3)} == {seed}  # one matrix
    b_full = fastcredit.feedback_matrix(seed, C, d_max, dist="normal",
                                        dtype=torch.float64) / math.sqrt(C * d_max)
    signals = [s @ b_full[:, :d] * math.sqrt(d_max / d) for d in widths]
    want = {}
    for h, signal, layer in ((h1, signals[0], "0"), (h2, signals[1], "3")):
        names = [f"{layer}.weight", f"{layer}.bias"]
        want.update(zip(names, torch.autograd.grad(h, [params[n] for n in names],
                                                   signal.view_as(h))))
    delta = signals[2] * (1 - h3.detach() ** 2)  # the hidden linear: tanh' by hand
    want["7.weight"] = delta.T @ plain[6](h2).detach()
    want["7.bias"] = delta.sum(0)
    e = s / len(y)  # the head: mean cross-entropy's true gradient
    want["9.weight"] = e.T @ h3.detach()
    want["9.bias"] = e.sum(0)
    got = dict(model.named_parameters())
    for name, grad in want.items():
        torch.testing.assert_close(got[name].grad, grad, rtol=1e-12, atol=1e-14, msg=name)


class _MLP(nn.Module):
    """6 -> 30 -> 10 -> 20 -> C tanh, a point after each hidden tanh."""

    def __init__(self, **dfa):
        super().__init__()
        torch.manual_seed(4)
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in ((6, 30), (30, 10), (10, 20)))
        self.points = nn.ModuleList(DFAPoint() for _ in self.linears)
        self.head = nn.Linear(20, C)
        self.dfa = DFAOutput(list(self.points), C, seed=5, **dfa)

    def forward(self, x):
        for linear, point in zip(self.linears, self.points):
            x = point(torch.tanh(linear(x)))
        return self.dfa(self.head(x))


def _mlp_grads(model, x, y, reduction="mean"):
    model.zero_grad()
    F.cross_entropy(model(x), y, reduction=reduction).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _hand_mlp_grads(model, x, y, matrices, s):
    """delta_l = (s B_l) * tanh'(a_l), grad W_l = delta_l^T h_{l-1}, grad b_l = sum delta_l."""
    grads, h = {}, x
    with torch.no_grad():
        for index, linear in enumerate(model.linears):
            out = torch.tanh(h @ linear.weight.T + linear.bias)
            delta = (s @ matrices[index]) * (1 - out ** 2)
            grads[f"linears.{index}.weight"] = delta.T @ h
            grads[f"linears.{index}.bias"] = delta.sum(0)
            h = out
    return grads


def _mlp_batch(n=7):
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(n, 6, dtype=torch.float64, generator=generator)
    return x, torch.randint(0, C, (n,), generator=generator)


def _check_hidden(got, want):
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-12, atol=1e-14, msg=name)


@pytest.mark.parametrize("preset", ["nokland2016", "launay2019", "tinydfa"])
def test_each_preset_is_its_papers_rule(preset):
    model = _MLP(preset=preset).double()
    x, y = _mlp_batch()
    got = _mlp_grads(model, x, y)
    out = model.dfa
    logits = model.head(torch.tanh(model.linears[2](torch.tanh(model.linears[1](
        torch.tanh(model.linears[0](x))))))).detach()
    widths, d_max = (30, 10, 20), 30
    if preset == "nokland2016":  # own matrix per point, uniform on ±1/sqrt(d_l), no 1/N
        assert len({out.point_seed(i) for i in range(3)}) == 3
        matrices = [fastcredit.feedback_matrix(out.point_seed(i), C, d, dist="uniform",
                                               dtype=torch.float64) / math.sqrt(d)
                    for i, d in enumerate(widths)]
        s = _softmax_minus_onehot(logits, y)
    else:  # one matrix, each point its first d_l columns
        assert len({out.point_seed(i) for i in range(3)}) == 1
        dist = "normal" if preset == "launay2019" else "uniform"
        full = fastcredit.feedback_matrix(out.point_seed(0), C, d_max, dist=dist,
                                          dtype=torch.float64)
        if preset == "launay2019":  # N(0, 1/(C D_max)) times sqrt(D_max/d_l); no 1/N
            matrices = [full[:, :d] / math.sqrt(C * d_max) * math.sqrt(d_max / d)
                        for d in widths]
            s = _softmax_minus_onehot(logits, y)
        else:  # TinyDFA: uniform [-1, 1) / sqrt(D_max); the loss's own 1/N
            matrices = [full[:, :d] / math.sqrt(d_max) for d in widths]
            s = _softmax_minus_onehot(logits, y) / len(y)
    _check_hidden(got, _hand_mlp_grads(model, x, y, matrices, s))
    e = _softmax_minus_onehot(logits, y) / len(y)  # the head keeps the loss's gradient
    h3 = torch.tanh(model.linears[2](torch.tanh(model.linears[1](torch.tanh(
        model.linears[0](x)))))).detach()
    torch.testing.assert_close(got["head.weight"], e.T @ h3, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("signal", ["error", "sign"])
def test_batch_error_scale_multiplies_by_rows_and_stays_linear_in_the_loss(signal):
    x, y = _mlp_batch()
    loss_scale = _MLP(signal=signal).double()
    batch_scale = _MLP(signal=signal, error_scale="batch").double()
    mean_loss, mean_batch = _mlp_grads(loss_scale, x, y), _mlp_grads(batch_scale, x, y)
    sum_batch = _mlp_grads(batch_scale, x, y, reduction="sum")
    for name in mean_loss:
        if name.startswith("head"):  # the output block's gradient is never rescaled
            torch.testing.assert_close(mean_batch[name], mean_loss[name], rtol=0, atol=0)
        else:  # rows x the loss's signal; a loss N times larger gives N x (sign's size k is
            # read from e, so it is linear in the loss too: docs/methods.md)
            torch.testing.assert_close(mean_batch[name], len(y) * mean_loss[name],
                                       rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(sum_batch[name], len(y) * mean_batch[name],
                                       rtol=1e-12, atol=1e-14)


def test_presets_reject_contradicting_options_and_reach_convert():
    with pytest.raises(ValueError, match="preset 'launay2019' fixes feedback='shared', got "
                                         "feedback='seeded'"):
        DFAOutput([DFAPoint()], C, preset="launay2019", feedback="seeded")
    with pytest.raises(ValueError, match="preset 'tinydfa' fixes error_scale='loss'"):
        DFAOutput([DFAPoint()], C, preset="tinydfa", error_scale="batch")
    with pytest.raises(ValueError, match="unknown preset 'launay'"):
        DFAOutput([DFAPoint()], C, preset="launay")
    with pytest.raises(ValueError, match="unknown error_scale 'mean'"):
        DFAOutput([DFAPoint()], C, error_scale="mean")
    agreeing = DFAOutput([DFAPoint()], C, preset="launay2019", feedback="shared")
    assert (agreeing.feedback, agreeing.normalization, agreeing.dist, agreeing.error_scale) == (
        "shared", "launay2019", "normal", "batch")
    default = DFAOutput([DFAPoint()], C)
    assert (default.feedback, default.normalization, default.dist, default.error_scale) == (
        "seeded", "launay2019", "normal", "loss")
    model = fastcredit.convert(_conv_net(), "dfa", preset="nokland2016")
    output = model[9].dfa_output
    assert (output.preset, output.feedback, output.normalization, output.error_scale) == (
        "nokland2016", "seeded", "nokland2016", "batch")


def test_residual_blocks_stay_whole_and_the_last_point_moves_to_the_pool_before_the_head():
    moved = fastcredit.convert(TinyResNet(), "dfa").conversion_report
    kept = fastcredit.convert(TinyResNet(), "dfa",
                              placement="after_activation").conversion_report
    assert [e.path for e in moved.converted] == ["relu", "layer1.0", "layer1.1", "avgpool", "fc"]
    assert [e.path for e in kept.converted] == ["relu", "layer1.0", "layer1.1", "layer2.0", "fc"]
    assert moved.blocks["avgpool"] == kept.blocks["layer2.0"]  # the same layers, one block
