"""fastcredit.diagnostics: alignment with backprop, checked against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

import fastcredit
from fastcredit.nn import LRA


def _batch(n=8, d=12, classes=4):
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(n, d, dtype=torch.float64, generator=generator)
    y = torch.randint(0, classes, (n,), generator=generator)
    return x, y


def test_plain_backprop_model_is_perfectly_aligned_and_grads_untouched():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 7), torch.nn.Tanh(), torch.nn.Dropout(0.3),
                                torch.nn.Linear(7, 4)).double()
    x, y = _batch()
    report = fastcredit.diagnostics.alignment(model, x, y)
    assert set(report) == {"0", "3"}
    for row in report.values():
        assert abs(row["signal_cosine"] - 1) < 1e-12 and abs(row["update_cosine"] - 1) < 1e-12
        assert math.isnan(row["weight_angle"])  # no feedback matrix
    assert all(p.grad is None for p in model.parameters())


def test_lra_values_match_a_hand_computation():
    torch.manual_seed(0)
    model = LRA([12, 7, 4], dtype=torch.float64)
    hidden, output = model[1], model[2]
    x, y = _batch()
    report = fastcredit.diagnostics.alignment(model, x, y)

    a1 = F.linear(x, hidden.weight, hidden.bias)
    h1 = torch.tanh(a1)
    logits = F.linear(h1, output.weight, output.bias)
    e_out = torch.softmax(logits, -1) - F.one_hot(y, 4).double()
    delivered = e_out @ output.feedback  # what LRA sends to h1
    true = e_out @ output.weight  # backprop's dL/dh1, up to the 1/N scale
    per_sample = F.cosine_similarity(delivered, true, dim=1)
    assert abs(report["1"]["signal_cosine"] - per_sample.mean().item()) < 1e-12
    assert abs(report["1"]["signal_cosine_std"] - per_sample.std().item()) < 1e-12

    diff = h1 - torch.tanh(a1 - hidden.beta * delivered)
    lra_update = diff.T @ x
    bp_update = ((true * (1 - h1**2)).T @ x)
    want = F.cosine_similarity(lra_update.flatten(), bp_update.flatten(), dim=0).item()
    assert abs(report["1"]["update_cosine"] - want) < 1e-12
    assert abs(report["2"]["update_cosine"] - 1) < 1e-12  # the output block's update is exact

    # (d) LRA's variant: e is the delta, compared with backprop's dL/da sample by sample
    bp_delta = true * (1 - h1**2)
    per_sample = F.cosine_similarity(diff, bp_delta, dim=1)
    assert abs(report["1"]["delta_cosine"] - per_sample.mean().item()) < 1e-12
    assert abs(report["1"]["delta_cosine_std"] - per_sample.std().item()) < 1e-12
    assert abs(report["1"]["delta_angle"] - math.degrees(math.acos(per_sample.mean().item()))) < 1e-9
    assert 0 < report["1"]["delta_cosine"] < 0.99  # E is random: related to W's delta, not equal
    assert abs(report["2"]["delta_cosine"] - 1) < 1e-12 and report["2"]["delta_cosine_std"] < 1e-12

    cos_ew = F.cosine_similarity(hidden.feedback.flatten(), hidden.weight.flatten(), dim=0)
    assert abs(report["1"]["weight_angle"] - math.degrees(math.acos(cos_ew.item()))) < 1e-9
    ratio = (hidden.feedback.norm() / hidden.weight.norm()).item()
    assert abs(report["1"]["norm_ratio"] - ratio) < 1e-12


def test_format_table_lists_every_layer():
    torch.manual_seed(0)
    model = LRA([12, 7, 4], dtype=torch.float64)
    table = fastcredit.diagnostics.format_table(fastcredit.diagnostics.alignment(model, *_batch()))
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["layer", "signal_cosine", "signal_cosine_std"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2"]


def _fa_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(fastcredit.nn.Linear(12, 9, method="fa"), torch.nn.Tanh(),
                               fastcredit.nn.Linear(9, 4, method="fa")).double()


def test_fa_with_b_equal_w_is_perfectly_aligned_and_random_b_is_not():
    model = _fa_net()
    x, y = _batch()
    random_b = fastcredit.diagnostics.alignment(model, x, y)
    assert random_b["0"]["update_cosine"] < 0.9  # layer 0 receives delta B from layer 2
    assert abs(random_b["2"]["update_cosine"] - 1) < 1e-12  # the top layer's update is exact
    for layer in (model[0], model[2]):
        layer.set_feedback_(layer.weight.detach())
    aligned = fastcredit.diagnostics.alignment(model, x, y)
    for row in aligned.values():
        assert abs(row["update_cosine"] - 1) < 1e-12 and abs(row["signal_cosine"] - 1) < 1e-12
        assert row["weight_angle"] < 1e-5 and abs(row["norm_ratio"] - 1) < 1e-12


def test_fa_values_match_a_hand_computation_and_delta_metrics_are_lra_only():
    model = _fa_net()
    x, y = _batch()
    report = fastcredit.diagnostics.alignment(model, x, y)

    first, second = model[0], model[2]
    h = torch.tanh(first(x))
    delta_out = (torch.softmax(second(h), -1) - F.one_hot(y, 4).double()) / len(x)
    fa_signal = (delta_out @ second.feedback_weight) * (1 - h**2)  # at layer 0's output
    bp_signal = (delta_out @ second.weight) * (1 - h**2)
    per_sample = F.cosine_similarity(fa_signal, bp_signal, dim=1)
    assert abs(report["0"]["signal_cosine"] - per_sample.mean().item()) < 1e-12
    assert abs(report["0"]["signal_cosine_std"] - per_sample.std().item()) < 1e-12
    want = F.cosine_similarity((fa_signal.T @ x).flatten(), (bp_signal.T @ x).flatten(), dim=0)
    assert abs(report["0"]["update_cosine"] - want.item()) < 1e-12
    b, w = first.feedback_weight, first.weight.detach()
    cos_bw = F.cosine_similarity(b.flatten(), w.flatten(), dim=0).item()
    assert abs(report["0"]["weight_angle"] - math.degrees(math.acos(cos_bw))) < 1e-9
    assert abs(report["0"]["norm_ratio"] - (b.norm() / w.norm()).item()) < 1e-12
    assert all(math.isnan(row["delta_cosine"]) for row in report.values())


class _OneHiddenDFA(torch.nn.Module):
    def __init__(self):
        super().__init__()
        from fastcredit.nn import DFALinear, DFAOutput

        self.hidden = DFALinear(12, 9, "tanh")
        self.head = torch.nn.Linear(9, 4)
        self.dfa = DFAOutput([self.hidden.point], 4, feedback="stored", normalization="none")

    def forward(self, x):
        return self.dfa(self.head(self.hidden(x)))


def test_dfa_with_b_equal_to_the_next_weight_matches_backprop_and_random_b_does_not():
    torch.manual_seed(0)
    model = _OneHiddenDFA().double()
    x, y = _batch()
    model(x)  # the first forward fixes the point's width
    random_b = fastcredit.diagnostics.alignment(model, x, y)
    assert random_b["hidden"]["update_cosine"] < 0.9
    model.dfa.set_feedback_matrix(0, model.head.weight.detach())
    aligned = fastcredit.diagnostics.alignment(model, x, y)
    assert abs(aligned["hidden"]["update_cosine"] - 1) < 1e-12
    assert abs(aligned["head"]["update_cosine"] - 1) < 1e-12


def test_modules_measures_after_the_activation_as_a_hand_computation():
    model = _fa_net()
    x, y = _batch()
    report = fastcredit.diagnostics.alignment(model, x, y, modules=["1"])
    assert set(report) == {"1"} and math.isnan(report["1"]["update_cosine"])  # Tanh: no weight
    # At the tanh output FA delivers e B_2 and backprop e W_2 (e = dL/dlogits, mean loss).
    h = model[1](model[0](x)).detach().requires_grad_()
    e = torch.autograd.grad(F.cross_entropy(model[2](h), y), h)[0]  # FA's own backward
    bp = torch.autograd.grad(F.cross_entropy(F.linear(h, model[2].weight, model[2].bias), y), h)[0]
    cosines = F.cosine_similarity(e, bp, dim=1)
    assert abs(report["1"]["signal_cosine"] - cosines.mean().item()) < 1e-12
    assert abs(report["1"]["signal_cosine_std"] - cosines.std().item()) < 1e-12
    assert report["1"]["signal_cosine"] < 0.99  # random B: not backprop


def test_modules_rejects_an_unknown_name():
    model = torch.nn.Sequential(torch.nn.Linear(12, 4))
    x, y = _batch()
    with pytest.raises(ValueError, match=r"no module named \['tanh'\]"):
        fastcredit.diagnostics.alignment(model, x.float(), y, modules=["0", "tanh"])
