"""fastcredit.nn Linear / Conv1d / Conv2d / Conv3d with FA, uSF, frSF, brSF, KP and BP feedback:
exact equivalences with backprop, each rule against a hand-written reference on every backend,
brSF's redraws, state_dict resume, and argument errors."""

import contextlib
import copy
import gc
import math
import weakref

import pytest
import torch
import torch.nn.functional as F

import backends
import fastcredit
from fastcredit import nn as fnn
from fastcredit import reference

F64 = torch.float64
# (method, feedback storage) for every supported combination
RULES = [("fa", "stored"), ("fa", "seeded"), ("usf", None), ("frsf", "stored"),
         ("frsf", "seeded"), ("brsf", "seeded"), ("kp", "stored"), ("bp", None)]

# name -> (fastcredit class, torch class, constructor args, input shape)
LAYERS = {
    "linear_2d": (fnn.Linear, torch.nn.Linear, dict(in_features=5, out_features=7), (9, 5)),
    "linear_3d": (fnn.Linear, torch.nn.Linear, dict(in_features=5, out_features=3), (2, 4, 5)),
    "conv1d": (fnn.Conv1d, torch.nn.Conv1d,
               dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1,
                    groups=2), (3, 4, 11)),
    "conv2d": (fnn.Conv2d, torch.nn.Conv2d,
               dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1),
                    padding=(1, 2), dilation=(1, 2), groups=2), (2, 4, 7, 8)),
    "conv3d": (fnn.Conv3d, torch.nn.Conv3d,
               dict(in_channels=3, out_channels=6, kernel_size=2, stride=(1, 2, 1), padding=1,
                    dilation=2, groups=3), (2, 3, 5, 4, 5)),
    # torch's other padding paths: explicit 'same' (asymmetric for an even kernel), a padding
    # mode, and an unbatched input
    "conv2d_same_even": (fnn.Conv2d, torch.nn.Conv2d,
                         dict(in_channels=2, out_channels=3, kernel_size=(2, 4), padding="same",
                              dilation=(1, 2)), (2, 2, 5, 6)),
    "conv1d_reflect_unbatched": (fnn.Conv1d, torch.nn.Conv1d,
                                 dict(in_channels=2, out_channels=3, kernel_size=3, padding=2,
                                      padding_mode="reflect", bias=False), (2, 9)),
}
CORE_LAYERS = ["linear_2d", "linear_3d", "conv1d", "conv2d", "conv3d"]


def _kernels(backend):
    """The context in which fastcredit's ops run on `backend`'s kernels."""
    return backends.emulated_kernels() if backend.name == "cuda_emulated" else (
        contextlib.nullcontext())


def _make(name, method, feedback=None, seed=1234, dtype=F64):
    cls, _, kwargs, _ = LAYERS[name]
    torch.manual_seed(0)
    if method in ("usf", "bp"):
        seed = None
    return cls(**kwargs, method=method, feedback=feedback, seed=seed, dtype=dtype)


def _torch_twin(name, layer):
    _, torch_cls, kwargs, _ = LAYERS[name]
    twin = torch_cls(**kwargs, dtype=layer.weight.dtype)
    twin.load_state_dict({k: v for k, v in layer.state_dict().items() if k in ("weight", "bias")})
    return twin


def _grads(layer, x, grad_out):
    """(dL/dx, dL/dW, dL/db) of <layer(x), grad_out>."""
    x = x.clone().requires_grad_()
    params = [x, layer.weight] + ([layer.bias] if layer.bias is not None else [])
    return torch.autograd.grad(layer(x), params, grad_out)


def _inputs(name, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(LAYERS[name][3], dtype=F64, generator=generator)
    return x


def _grad_out(layer, x, seed=1):
    with torch.no_grad():
        shape = layer(x).shape
    return torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _assert_grads_equal(got, want, rtol=1e-12):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=rtol, atol=rtol * max(1.0, w.abs().max().item()))


# ---- exact equivalences with backprop -----------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's twin
@pytest.mark.parametrize("name", list(LAYERS))
def test_fa_with_b_equal_w_matches_backprop(native_backend, name):
    with _kernels(native_backend):
        layer = _make(name, "fa")
        layer.set_feedback_(layer.weight)
        x = _inputs(name)
        grad_out = _grad_out(layer, x)
        want = _grads(_torch_twin(name, layer), x, grad_out)
        _assert_grads_equal(_grads(layer, x, grad_out), want)


@pytest.mark.parametrize("name", CORE_LAYERS)
def test_usf_with_equal_magnitude_weights_is_backprop_times_scale_over_magnitude(native_backend,
                                                                                   name):
    with _kernels(native_backend):
        layer = _make(name, "usf")
        with torch.no_grad():
            layer.weight.copy_(0.3 * torch.sign(layer.weight))  # every |W| = 0.3
        x = _inputs(name)
        grad_out = _grad_out(layer, x)
        got = _grads(layer, x, grad_out)
        want = _grads(_torch_twin(name, layer), x, grad_out)
    ratio = layer.feedback_scale / 0.3
    fan_in, fan_out = layer.weight[0].numel(), layer.weight[:, 0].numel()
    assert layer.feedback_scale == math.sqrt(2.0 / (fan_in + fan_out))
    _assert_grads_equal(got, (ratio * want[0], *want[1:]))


# ---- each rule against a hand-written reference -------------------------------------------------
def _reference_feedback(layer, step=0):
    """B written out from the rule's definition (fastcredit.nn.fa.rule), from reference ops only."""
    w = layer.weight.detach()
    rows, cols = w.shape[0], w[0].numel()
    receptive = w[0, 0].numel()
    fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
    method = layer.method
    if method == "bp":
        return w
    if method == "usf":
        return math.sqrt(2.0 / (fan_in + fan_out)) * torch.sign(w)
    seed = int(layer.feedback_seed) % 2**64
    if method == "brsf":
        seed = reference.step_seed(seed, step)
    scale = math.sqrt(6.0 / (fan_in + fan_out))
    f = reference.feedback_matrix(seed, rows, cols, scale=scale, dtype=F64).view(w.shape)
    return f if method in ("fa", "kp") else f.abs() * torch.sign(w)


def _reference_grads(layer, x, grad_out, b):
    x = x.clone().requires_grad_()
    w = layer.weight.detach().clone().requires_grad_()
    if isinstance(layer, torch.nn.Linear):
        def forward(inp, weight):
            return F.linear(inp, weight)
    else:
        def forward(inp, weight):
            return layer._conv_forward(inp, weight, None)
    (grad_x,) = torch.autograd.grad(forward(x, b), x, grad_out)
    (grad_w,) = torch.autograd.grad(forward(x.detach(), w), w, grad_out)
    dims = [d for d in range(grad_out.dim()) if d != grad_out.dim() - (
        1 if isinstance(layer, torch.nn.Linear) else layer.weight.dim() - 1)]
    grads = (grad_x, grad_w)
    if layer.bias is not None:
        grads += (grad_out.sum(dims),)
    return grads


@pytest.mark.parametrize("method,feedback", RULES)
@pytest.mark.parametrize("name", CORE_LAYERS)
def test_gradients_equal_hand_written_rule(native_backend, name, method, feedback):
    with _kernels(native_backend):
        layer = _make(name, method, feedback)
        x = _inputs(name)
        grad_out = _grad_out(layer, x)
        for step in range(2 if method == "brsf" else 1):
            if step:  # brSF draws anew after an optimizer step changed the weight
                layer.weight.grad = torch.ones_like(layer.weight)
                torch.optim.SGD([layer.weight], lr=1e-3).step()
            want = _reference_grads(layer, x, grad_out, _reference_feedback(layer, step))
            b_next = layer.feedback_matrix()
            got = _grads(layer, x, grad_out)
            _assert_grads_equal(got, want)
            # feedback_matrix() is the B this backward used
            torch.testing.assert_close(b_next, _reference_feedback(layer, step), rtol=0, atol=0)


@pytest.mark.parametrize("method", ["fa", "frsf"])
def test_seeded_and_stored_feedback_from_one_seed_are_the_same(method):
    for name in ("linear_2d", "conv2d"):
        stored, seeded = _make(name, method, "stored"), _make(name, method, "seeded")
        assert torch.equal(stored.feedback_matrix(), seeded.feedback_matrix())
        x = _inputs(name)
        grad_out = _grad_out(stored, x)
        _assert_grads_equal(_grads(seeded, x, grad_out), _grads(stored, x, grad_out), rtol=1e-13)


def test_sign_of_zero_weight_sends_no_feedback():
    layer = _make("linear_2d", "usf")
    with torch.no_grad():
        layer.weight[:, 2] = 0.0
    x = _inputs("linear_2d")
    grad_x, *_ = _grads(layer, x, _grad_out(layer, x))
    assert torch.count_nonzero(grad_x[:, 2]) == 0 and torch.count_nonzero(grad_x[:, :2]) > 0
    assert torch.count_nonzero(layer.feedback_matrix()[:, 2]) == 0


def test_default_feedback_has_xavier_variance():
    for method, dist in [("fa", "uniform"), ("fa", "normal"), ("frsf", "rademacher"),
                         ("brsf", "uniform"), ("kp", "uniform"), ("usf", "uniform")]:
        kwargs = {} if method == "usf" else dict(seed=5, feedback_dist=dist)
        layer = fnn.Linear(300, 200, method=method, **kwargs)
        b = layer.feedback_matrix()
        assert b.var().item() == pytest.approx(2.0 / 500, rel=0.03), (method, dist)
        assert torch.equal(torch.sign(b), torch.sign(layer.weight)) or method in ("fa", "kp")


def test_feedback_is_never_a_parameter():
    for method, feedback in RULES:
        for name in CORE_LAYERS:
            layer = _make(name, method, feedback)
            assert [p is q for p, q in zip(layer.parameters(), (layer.weight, layer.bias))] == [
                True, True]
            assert len(list(layer.parameters())) == 2


def test_seed_comes_from_torch_generator_when_not_given():
    torch.manual_seed(3)
    a, b = fnn.Linear(4, 4), fnn.Linear(4, 4)
    torch.manual_seed(3)
    a2 = fnn.Linear(4, 4)
    assert int(a.feedback_seed) == int(a2.feedback_seed) != int(b.feedback_seed)
    assert torch.equal(a.feedback_weight, a2.feedback_weight)


# ---- brSF ---------------------------------------------------------------------------------------
def test_brsf_draws_a_new_magnitude_after_every_update_and_rerun_draws_the_same():
    def run(seed):
        torch.manual_seed(0)
        layer = fnn.Linear(6, 5, method="brsf", seed=seed, dtype=F64)
        opt = torch.optim.SGD(layer.parameters(), lr=0.1)
        x = _inputs("linear_2d", seed=4)[:, :5].repeat(1, 2)[:, :6]
        draws, signs = [], []
        for _ in range(3):
            draws.append(layer.feedback_matrix())
            signs.append(torch.sign(layer.weight.detach()))
            opt.zero_grad()
            layer(x).square().sum().backward()
            opt.step()
        assert int(layer.feedback_step) == 3
        for draw, sign in zip(draws, signs):
            assert torch.equal(torch.sign(draw), sign)  # signs follow W
        return draws

    first, rerun, other = run(7), run(7), run(8)
    for a, b in zip(first, rerun):
        assert torch.equal(a, b)
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.equal(first[i], first[j])
        assert not torch.equal(first[i], other[i])


def test_brsf_draws_once_per_update_not_per_backward():
    """Liao et al. 2016 redraw |M| per mini-batch: every backward between two updates (layer
    reuse, accumulated micro-batches) uses one draw; a step that leaves W alone draws none."""
    layer = fnn.Linear(5, 5, method="brsf", seed=3, dtype=F64)
    x = torch.randn(4, 5, dtype=F64)
    opt = fastcredit.optim.BatchManhattan(torch.optim.SGD(layer.parameters(), lr=0.1))
    layer(layer(x)).sum().backward()  # applied twice in one forward
    layer(x).sum().backward()  # a second micro-batch
    assert int(layer.feedback_step) == 0
    opt.step()  # the wrapper and the SGD it wraps: one update, one new draw
    assert int(layer.feedback_step) == 1
    opt.zero_grad(set_to_none=True)
    opt.step()  # no gradient: W unchanged, no draw
    assert int(layer.feedback_step) == 1
    layer.redraw_feedback_()  # after a hand-written update
    assert int(layer.feedback_step) == 2 and layer.feedback_step.device.type == "cpu"


@pytest.mark.parametrize("method,feedback", [("brsf", "seeded"), ("frsf", "seeded"),
                                             ("usf", None), ("fa", "seeded")])
@pytest.mark.parametrize("name", ["linear_2d", "conv2d"])
def test_no_weight_sized_tensor_outlives_the_backward(monkeypatch, name, method, feedback):
    layer = _make(name, method, feedback)
    weight_sized = [b for b in layer.buffers() if b.numel() >= layer.weight.numel()]
    assert weight_sized == []
    built = []
    for op_name in ("sign_feedback", "feedback_matrix"):
        original = getattr(fastcredit.ops, op_name)

        def recording(*args, _original=original, **kwargs):
            out = _original(*args, **kwargs)
            built.append(weakref.ref(out))
            return out

        monkeypatch.setattr(fastcredit.ops, op_name, recording)
    x = _inputs(name).requires_grad_()
    layer(x).square().sum().backward()
    gc.collect()
    if not (method == "fa" and name == "linear_2d"):  # seeded FA Linear never materialises B
        assert built
    assert all(ref() is None for ref in built)
    assert [b for b in layer.buffers() if b.numel() >= layer.weight.numel()] == []


# ---- state_dict ---------------------------------------------------------------------------------
def _model(method, feedback, seed_offset=0):
    torch.manual_seed(100 + seed_offset)
    kwargs = dict(method=method, feedback=feedback, dtype=F64)
    return torch.nn.Sequential(
        fnn.Conv1d(2, 3, 3, **kwargs), torch.nn.Tanh(), torch.nn.Flatten(),
        fnn.Linear(12, 8, **kwargs), torch.nn.Tanh(), fnn.Linear(8, 3, **kwargs))


def _optimizer(model, method):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    return fastcredit.optim.KolenPollack(opt, model) if method == "kp" else opt


def _train(model, opt, steps, start):
    for step in range(start, start + steps):
        generator = torch.Generator().manual_seed(step)
        x = torch.randn(5, 2, 6, dtype=F64, generator=generator)
        y = torch.randint(0, 3, (5,), generator=generator)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("method,feedback", RULES)
def test_state_dict_round_trips_and_resume_is_bit_identical(method, feedback):
    model = _model(method, feedback)
    opt = _optimizer(model, method)
    _train(model, opt, 3, start=0)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    _train(model, opt, 3, start=3)

    resumed = _model(method, feedback, seed_offset=1)  # other seeds until the state is loaded
    resumed.load_state_dict(saved_model)
    for key, value in saved_model.items():
        assert torch.equal(resumed.state_dict()[key], value), key
    resumed_opt = _optimizer(resumed, method)
    resumed_opt.load_state_dict(saved_opt)
    _train(resumed, resumed_opt, 3, start=3)
    for (key, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key


# ---- bad arguments ------------------------------------------------------------------------------
def test_rejects_bad_arguments_with_clear_errors():
    with pytest.raises(ValueError, match=r"unknown method 'dfa'; expected one of \('fa'"):
        fnn.Linear(3, 4, method="dfa")
    with pytest.raises(ValueError, match="method 'kp' cannot use feedback='seeded': kp trains B"):
        fnn.Linear(3, 4, method="kp", feedback="seeded")
    with pytest.raises(ValueError, match="method 'brsf' cannot use feedback='stored': brsf "
                                         "redraws"):
        fnn.Conv2d(3, 4, 3, method="brsf", feedback="stored")
    with pytest.raises(ValueError, match="method 'usf' keeps no feedback state"):
        fnn.Conv1d(3, 4, 3, method="usf", feedback="seeded")
    with pytest.raises(ValueError, match="method 'bp' keeps no feedback state"):
        fnn.Linear(3, 4, method="bp", feedback="stored")
    with pytest.raises(ValueError, match="method 'fa' cannot use feedback='random'"):
        fnn.Linear(3, 4, method="fa", feedback="random")
    with pytest.raises(ValueError, match="method 'usf' draws nothing at random; leave seed and "
                                         "feedback_dist None"):
        fnn.Linear(3, 4, method="usf", seed=3)
    with pytest.raises(ValueError, match=r"seed must satisfy 0 <= seed < 2\*\*64, got -1"):
        fnn.Linear(3, 4, seed=-1)
    with pytest.raises(ValueError, match="feedback_scale must be finite and positive, got 0"):
        fnn.Linear(3, 4, feedback_scale=0.0)
    with pytest.raises(ValueError, match="unknown feedback_dist 'cauchy'"):
        fnn.Linear(3, 4, feedback_dist="cauchy")


def test_rejects_mismatched_shapes():
    layer = fnn.Linear(3, 4, method="fa")
    with pytest.raises(ValueError, match=r"feedback must have the weight's shape \(4, 3\), got "
                                         r"\(3, 4\)"):
        layer.set_feedback_(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"feedback must have the weight's shape \(4, 3\), got "
                                         r"\(4, 1\)"):
        layer.set_feedback_(torch.zeros(4, 1))  # would broadcast in copy_
    state = layer.state_dict()
    state["feedback_weight"] = torch.zeros(4, 5)
    with pytest.raises(RuntimeError, match="size mismatch for feedback_weight"):
        layer.load_state_dict(state)
    layer.feedback_weight = torch.zeros(4, 5)  # replaced by hand
    with pytest.raises(RuntimeError, match=r"stored feedback has shape \(4, 5\), the weight "
                                           r"\(4, 3\)"):
        layer(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="method 'usf' with feedback=None stores no feedback"):
        fnn.Linear(3, 4, method="usf").set_feedback_(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"Conv2d expects a \[N, C, \*spatial\] or "
                                         r"\[C, \*spatial\] input with 2 spatial dims, got shape"):
        fnn.Conv2d(3, 4, 3)(torch.zeros(3, 5))
