"""fastcredit.convert on a ResNet-like model and on MLPs: forward unchanged, each method's
gradients, parameters reused, the report accurate, clear errors."""

import copy

import pytest
import torch
import torch.nn.functional as F
from resnet import WEIGHT_LAYERS, TinyResNet
from torch import nn

import fastcredit
from fastcredit._spec import FEEDBACK_METHODS


def _resnet():
    torch.manual_seed(0)
    return TinyResNet().double()


def _batch(n=4, classes=5):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 8, 8, dtype=torch.float64, generator=generator)
    return x, torch.randint(0, classes, (n,), generator=generator)


def _grads(model, x, y):
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    F.cross_entropy(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}, x.grad


@pytest.mark.parametrize("method", FEEDBACK_METHODS)
def test_feedback_method_keeps_parameters_forward_and_reports_every_module(method):
    model = _resnet()
    original = copy.deepcopy(model)
    params = dict(model.named_parameters())
    x, _ = _batch()
    converted = fastcredit.convert(model, method)
    assert converted is model
    assert all(p is params[n] for n, p in model.named_parameters()) and len(params) == len(
        dict(model.named_parameters()))
    assert torch.equal(model(x), original(x))
    report = model.conversion_report
    assert [e.path for e in report.converted] == WEIGHT_LAYERS
    for entry in report.converted:
        layer = model.get_submodule(entry.path)
        assert isinstance(layer, fastcredit.nn.FeedbackLayer) and layer.method == method
    unchanged = {e.path: e.kind for e in report.unchanged}
    assert unchanged["bn1"] == "BatchNorm2d" and unchanged["layer2.0.downsample.1"] == "BatchNorm2d"
    assert unchanged["relu"] == "ReLU" and unchanged["avgpool"] == "AdaptiveAvgPool2d"
    leaves = {n for n, m in original.named_modules() if not m._modules}
    assert set(unchanged) | {e.path for e in report.converted} == leaves
    assert report.unsupported == []


def test_bp_conversion_gives_backprops_gradients_exactly():
    model = _resnet()
    x, y = _batch()
    want, want_x = _grads(model, x, y)
    got, got_x = _grads(fastcredit.convert(model, "bp"), x, y)
    assert all(torch.equal(got[n], want[n]) for n in want) and torch.equal(got_x, want_x)


def test_fa_with_b_set_to_w_gives_backprops_gradients():
    model = _resnet()
    x, y = _batch()
    want, want_x = _grads(model, x, y)
    fastcredit.convert(model, "fa")
    random_b, _ = _grads(model, x, y)
    assert not torch.allclose(random_b["conv1.weight"], want["conv1.weight"])
    for entry in model.conversion_report.converted:
        layer = model.get_submodule(entry.path)
        layer.set_feedback_(layer.weight.detach())
    got, got_x = _grads(model, x, y)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(got_x, want_x, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["usf", "frsf", "brsf", "kp"])
def test_each_method_sends_its_own_feedback_matrix(method):
    """The converted model's gradients are those of FA with B set to each layer's
    feedback_matrix() (the B its next backward uses), and differ from backprop's."""
    model = _resnet()
    x, y = _batch()
    backprop, _ = _grads(model, x, y)
    fa_twin = fastcredit.convert(copy.deepcopy(model), "fa")
    fastcredit.convert(model, method)
    for entry in model.conversion_report.converted:
        b = model.get_submodule(entry.path).feedback_matrix()
        fa_twin.get_submodule(entry.path).set_feedback_(b)
    got, got_x = _grads(model, x, y)
    want, want_x = _grads(fa_twin, x, y)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(got_x, want_x, rtol=1e-12, atol=1e-15)
    assert torch.equal(got["fc.weight"], backprop["fc.weight"])  # the top layer's is exact
    assert not torch.allclose(got["conv1.weight"], backprop["conv1.weight"])


def test_seed_option_gives_distinct_reproducible_layer_seeds():
    first = fastcredit.convert(_resnet(), "fa", seed=7, feedback="seeded")
    second = fastcredit.convert(_resnet(), "fa", seed=7, feedback="seeded")
    seeds = [int(m.feedback_seed) for m in first.modules() if hasattr(m, "feedback_seed")]
    assert len(set(seeds)) == len(WEIGHT_LAYERS)
    assert seeds == [int(m.feedback_seed) for m in second.modules()
                     if hasattr(m, "feedback_seed")]


DFA_BLOCKS = {
    "relu": ["conv1", "bn1"],
    "layer1.0": ["layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2", "layer1.0.bn2"],
    "layer1.1": ["layer1.1.conv1", "layer1.1.bn1", "layer1.1.conv2", "layer1.1.bn2"],
    # the last residual block's point moves on to the pool before the head
    "avgpool": ["layer2.0.conv1", "layer2.0.bn1", "layer2.0.conv2", "layer2.0.bn2",
                "layer2.0.downsample.0", "layer2.0.downsample.1"],
    "output": ["fc"],
}


def test_dfa_points_follow_the_stem_and_every_residual_block_and_match_a_hand_computation():
    model = _resnet()
    reference = copy.deepcopy(model)
    x, y = _batch()
    params = dict(model.named_parameters())
    fastcredit.convert(model, "dfa")
    report = model.conversion_report
    assert report.blocks == DFA_BLOCKS
    assert [e.path for e in report.converted] == ["relu", "layer1.0", "layer1.1", "avgpool", "fc"]
    assert "num_outputs=5" in report.converted[-1].note
    assert {e.path for e in report.unchanged} >= {"conv1", "bn1", "layer1.0.relu"}
    assert all(p is params[n] for n, p in model.named_parameters())
    assert torch.equal(model(x), reference(x))
    got, got_x = _grads(model, x, y)

    # Hand computation on the unconverted copy: block l's parameters get the gradient of
    # <h_l, e B_l> with h_l its output and e = dL/dlogits; the head gets its true gradient.
    outputs = {}
    for path in DFA_BLOCKS:
        if path != "output":
            reference.get_submodule(path).register_forward_hook(
                lambda m, i, o, path=path: outputs.setdefault(path, o))
    x_ref = x.clone().requires_grad_()
    logits = reference(x_ref)
    loss = F.cross_entropy(logits, y)
    (e,) = torch.autograd.grad(loss, logits, retain_graph=True)
    points = fastcredit.nn.dfa_points(model)
    for point, path in zip(points, ["relu", "layer1.0", "layer1.1", "avgpool"]):
        h = outputs[path]
        signal = (e @ point.feedback_matrix(dtype=torch.float64)).view_as(h)
        names = [f"{m}.{p}" for m in DFA_BLOCKS[path]
                 for p, _ in reference.get_submodule(m).named_parameters()]
        ref_params = dict(reference.named_parameters())
        want = torch.autograd.grad(h, [ref_params[n] for n in names], signal, retain_graph=True)
        for name, grad in zip(names, want):
            torch.testing.assert_close(got[name], grad, rtol=1e-10, atol=1e-14)
        if path == "relu":  # the stem's input gets the first point's feedback through it
            (want_x,) = torch.autograd.grad(h, x_ref, signal, retain_graph=True)
            torch.testing.assert_close(got_x, want_x, rtol=1e-10, atol=1e-14)
    for name, grad in zip(("fc.weight", "fc.bias"), torch.autograd.grad(
            loss, [reference.fc.weight, reference.fc.bias])):
        torch.testing.assert_close(got[name], grad, rtol=1e-12, atol=1e-15)


def test_dfa_options_reach_the_output_and_points():
    model = fastcredit.convert(_resnet(), "dfa", num_outputs=5, normalization="nokland2016",
                               feedback="stored", seed=3, spatial="shared")
    output = model.fc.dfa_output
    assert (output.normalization, output.feedback, int(output.seed)) == ("nokland2016",
                                                                         "stored", 3)
    assert all(p.spatial == "shared" for p in fastcredit.nn.dfa_points(model))
    x, y = _batch()
    F.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_dfa_num_outputs_must_match_the_head():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 5))
    with pytest.raises(ValueError, match="num_outputs=3 but the head '2' has 5 outputs"):
        fastcredit.convert(net, "dfa", num_outputs=3, copy=True)
    # with batch_dims given, C may span several dims of the output: [N, 5] rows (0,) -> C = 5
    model = fastcredit.convert(net, "dfa", num_outputs=5, batch_dims=(0,))
    assert model[2].dfa_output.num_outputs == 5


def test_dfa_rejects_models_without_hidden_blocks():
    with pytest.raises(ValueError, match="found no hidden block"):
        fastcredit.convert(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), "dfa")
    with pytest.raises(ValueError, match="exactly one Linear/Conv layer"):
        fastcredit.convert(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4),
                                         nn.Linear(4, 2)), "dfa")
    with pytest.raises(ValueError, match="signal='target'"):
        fastcredit.convert(_resnet(), "dfa", signal="target")

    class TiedBlock(nn.Module):  # one block applied twice: no single boundary to cut at
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.block(self.block(x)))

    # (reused within a forward: every run is fed, tests/test_mechanics.py checks the values)
    model = fastcredit.convert(TiedBlock(), "dfa")
    assert [e.path for e in model.conversion_report.converted] == ["block.1", "head"]


def test_lra_converts_a_sequential_mlp_into_lra_blocks_with_the_same_gradients():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 5),
                        nn.LeakyReLU(0.2), nn.Linear(5, 3)).double()
    original = copy.deepcopy(mlp)
    params = dict(mlp.named_parameters())
    x = torch.randn(8, 2, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    fastcredit.convert(mlp, "lra", beta=0.2, gamma=0.5)
    assert all(p is params[n] for n, p in mlp.named_parameters() if n in params)
    assert set(params) < set(dict(mlp.named_parameters()))  # and E for each block
    assert [e.path for e in mlp.conversion_report.converted] == ["1", "2", "3", "4", "5"]
    assert torch.equal(mlp(x), original(x))
    direct = fastcredit.nn.LRA([6, 7, 5, 3], dtype=torch.float64, beta=0.2, gamma=0.5)
    direct[2].activation, direct[2].negative_slope = "leaky_relu", 0.2
    for block, converted in zip(list(direct)[1:], (mlp[1], mlp[3], mlp[5])):
        block.load_state_dict(converted.state_dict())
    F.cross_entropy(mlp(x), y).backward()
    F.cross_entropy(direct(x), y).backward()
    for block, converted in zip(list(direct)[1:], (mlp[1], mlp[3], mlp[5])):
        for name in ("weight", "bias", "feedback"):
            assert torch.equal(getattr(converted, name).grad, getattr(block, name).grad)


def test_lra_rejects_models_it_cannot_convert():
    with pytest.raises(ValueError, match="needs a Linear output layer producing logits; "
                                         "Sequential has none"):
        fastcredit.convert(nn.Sequential(nn.Conv1d(2, 3, 1), nn.LayerNorm(3)), "lra")
    with pytest.raises(ValueError, match="needs numeric padding with padding_mode='zeros'"):
        fastcredit.convert(nn.Sequential(nn.Conv1d(2, 3, 3, padding="same"), nn.Flatten(),
                                         nn.Linear(6, 2)), "lra")
    with pytest.raises(ValueError, match="refine_steps and clip_direction are not offered"):
        fastcredit.convert(nn.Sequential(nn.Conv1d(2, 3, 3), nn.Flatten(), nn.Linear(3, 2)),
                           "lra", refine_steps=3)
    with pytest.raises(ValueError, match="last module must be the Linear output"):
        fastcredit.convert(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2),
                                         nn.Sigmoid()), "lra")


def test_lra_in_place_conversion_keeps_a_shared_layer_shared():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 2, 3, padding=1)
            self.again = self.conv  # the same layer under a second name
            self.head = nn.Linear(2 * 5, 3)

        def forward(self, x):
            return self.head(torch.tanh(self.again(torch.tanh(self.conv(x)))).flatten(1))

    model = fastcredit.convert(Tied(), "lra")
    assert isinstance(model.conv, fastcredit.nn.LRAConv1d) and model.again is model.conv
    assert [e.path for e in model.conversion_report.converted] == ["conv", "head"]
    F.cross_entropy(model(torch.randn(4, 2, 5)), torch.tensor([0, 1, 2, 0])).backward()
    assert model.conv.weight.grad.any()


def test_unsupported_modules_are_listed_and_left_alone():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(4))
            self.inner = nn.Linear(4, 4)

        def forward(self, x):
            return self.inner(x) * self.scale

    model = nn.Sequential(nn.Linear(4, 4), nn.Bilinear(4, 4, 4), nn.ConvTranspose1d(4, 4, 1),
                          Scaled(), nn.Embedding(3, 4))
    bilinear = model[1]
    fastcredit.convert(model, "fa")
    report = model.conversion_report
    assert [(e.path, e.kind) for e in report.unsupported] == [
        ("1", "Bilinear"), ("3", "Scaled")]
    assert [e.path for e in report.converted] == ["0", "2", "3.inner"]
    assert model[1] is bilinear and isinstance(model[2], fastcredit.nn.ConvTranspose1d)
    assert ("4", "Embedding") in [(e.path, e.kind) for e in report.unchanged]


def test_layers_with_hooks_are_not_swapped_but_listed():
    hooked = nn.Linear(4, 4)
    hooked.register_forward_hook(lambda module, inputs, output: output * 2)
    model = fastcredit.convert(nn.Sequential(hooked, nn.Tanh(), nn.Linear(4, 2)), "fa")
    assert model[0] is hooked and isinstance(model[2], fastcredit.nn.Linear)
    assert [(e.path, e.note.split(" (")[0]) for e in model.conversion_report.unsupported] == [
        ("0", "has hooks")]
    with pytest.raises(ValueError, match="cannot replace.*has hooks"):
        fastcredit.convert(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), hooked), "lra")


def test_shared_module_is_converted_once_and_root_layer_is_returned():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    fastcredit.convert(model, "usf")
    assert model[0] is model[2] and isinstance(model[0], fastcredit.nn.Linear)
    layer = fastcredit.convert(nn.Conv1d(2, 3, 1), "frsf")
    assert isinstance(layer, fastcredit.nn.Conv1d) and layer.conversion_report.converted


def test_copy_leaves_the_original_and_nothing_is_printed(capsys):
    model = _resnet()
    converted = fastcredit.convert(model, "kp", copy=True)
    assert type(model.conv1) is nn.Conv2d and isinstance(converted.conv1, fastcredit.nn.Conv2d)
    assert converted.conv1.weight is not model.conv1.weight
    assert torch.equal(converted.conv1.weight, model.conv1.weight)
    assert not hasattr(model, "conversion_report")
    assert capsys.readouterr() == ("", "")


def test_unknown_method_and_options_are_named():
    with pytest.raises(ValueError, match="unknown method 'xyz'"):
        fastcredit.convert(_resnet(), "xyz")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['betta'\] for method 'lra'"):
        fastcredit.convert(_resnet(), "lra", betta=0.1)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['num_outputs'\] for method 'fa'"):
        fastcredit.convert(_resnet(), "fa", num_outputs=3)
    with pytest.raises(ValueError, match="seed must satisfy 0 <= seed"):
        fastcredit.convert(_resnet(), "fa", seed=-1)
    with pytest.raises(TypeError, match="seed must be an int, got float"):
        fastcredit.convert(_resnet(), "fa", seed=1.0)
    with pytest.raises(TypeError, match="convert expects an nn.Module, got list"):
        fastcredit.convert([nn.Linear(2, 2)], "fa")
