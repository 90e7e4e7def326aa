"""dfa_backward_epilogue: delta = grad * f'(a), grad_bias = delta.sum(0), against torch autograd,
with f' taken from the pre-activation a or (where PyTorch does so) from the output f(a)."""

import pytest
import torch

import fastcredit
from fastcredit import reference
from torch_activations import torch_activation

ACTIVATIONS = reference.ACTIVATIONS
# (N, D): 1, odd, not multiples of the CPU tiles (64 x 512) or the CUDA block (128 x 32),
# and more than one row slab / column block.
SHAPES = [(1, 1), (7, 33), (129, 5), (300, 513), (1000, 3)]
EMULATED_SHAPES = [(1, 1), (7, 33), (129, 5), (257, 67)]


def _inputs(n, d, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed + 7919 * n + d)
    grad = torch.randn(n, d, dtype=dtype, generator=generator)
    # wide enough to reach every regime: relu6's cap, softplus's threshold, gelu's tails
    pre = 12 * torch.rand(n, d, dtype=dtype, generator=generator) - 4
    return grad, pre


def _autograd_delta(grad, pre, activation, negative_slope):
    """f' from torch's own backward of torch's activation function (not the oracle's, which
    the reference backend runs): the definition we must match."""
    if activation == "sign":  # torch's derivative is 0; ours is, by definition, the surrogate
        return grad * (pre.abs() <= 1).to(grad.dtype)
    a = pre.detach().clone().requires_grad_()
    out = torch_activation(a, activation, negative_slope)
    (delta,) = torch.autograd.grad(out, a, grad)
    return delta


@pytest.mark.parametrize("saved_is_output", [False, True], ids=["from_input", "from_output"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_matches_torch_autograd_float64(backend, activation, saved_is_output):
    if saved_is_output and not reference.grad_from_output_supported(activation, 0.3):
        pytest.skip(f"{activation}'s derivative needs the pre-activation")
    epilogue = backend.op("dfa_backward_epilogue")
    for n, d in EMULATED_SHAPES if backend.slow else SHAPES:
        grad, pre = _inputs(n, d)
        saved = torch_activation(pre, activation, 0.3) if saved_is_output else pre
        delta, grad_bias = epilogue(grad.to(backend.device), saved.to(backend.device),
                                    activation, negative_slope=0.3,
                                    saved_is_output=saved_is_output)
        want = _autograd_delta(grad, pre, activation, 0.3)
        assert delta.shape == (n, d) and grad_bias.shape == (d,)
        assert delta.dtype == grad_bias.dtype == torch.float64
        torch.testing.assert_close(delta.cpu(), want, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(grad_bias.cpu(), want.sum(0), rtol=1e-12, atol=1e-12 * n)


@pytest.mark.parametrize("saved_is_output", [False, True], ids=["from_input", "from_output"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "relu6"])
def test_derivative_at_kinks_is_torchs(native_backend, activation, saved_is_output):
    # relu: 0 at 0; leaky_relu: the slope at 0; relu6 (hardtanh): 0 at 0 and at 6
    pre = torch.tensor([[-1.0, 0.0, 1e-300, 3.0, 6.0, 7.0]], dtype=torch.float64)
    grad = torch.ones_like(pre)
    saved = torch_activation(pre, activation, 0.25) \
        if saved_is_output else pre
    delta, _ = native_backend.op("dfa_backward_epilogue")(
        grad, saved, activation, negative_slope=0.25, saved_is_output=saved_is_output)
    assert torch.equal(delta, _autograd_delta(grad, pre, activation, 0.25))


@pytest.mark.parametrize("activation", ["tanh", "gelu", "softplus"])
def test_float32_close_to_float64(native_backend, activation):
    n, d = (67, 33) if native_backend.slow else (500, 300)
    grad, pre = _inputs(n, d)
    want_delta, want_bias = reference.dfa_backward_epilogue(grad, pre, activation)
    delta, grad_bias = native_backend.op("dfa_backward_epilogue")(grad.float(), pre.float(),
                                                                 activation)
    assert delta.dtype == grad_bias.dtype == torch.float32
    torch.testing.assert_close(delta.double(), want_delta, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_bias.double(), want_bias, rtol=1e-5, atol=1e-6 * n**0.5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(native_backend, dtype):
    grad, pre = _inputs(300, 9)
    grad, pre = grad.to(dtype), pre.to(dtype)
    delta, grad_bias = native_backend.op("dfa_backward_epilogue")(grad, pre, "sigmoid")
    assert delta.dtype == grad_bias.dtype == dtype
    want_delta, want_bias = reference.dfa_backward_epilogue(grad.float(), pre.float(), "sigmoid")
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(delta.float(), want_delta.to(dtype).float(), rtol=eps, atol=eps)
    # the sum of 300 terms accumulated in float32, rounded once
    torch.testing.assert_close(grad_bias.float(), want_bias, rtol=2 * eps, atol=2 * eps)


def test_non_contiguous_and_expanded_inputs(native_backend):
    base_grad, base_pre = _inputs(40, 70)
    epilogue = native_backend.op("dfa_backward_epilogue")
    cases = [
        (base_grad.T, base_pre.T),                        # column-major
        (base_grad[::3, 1::2], base_pre[::3, 1::2]),      # both strides > 1
        (base_grad[:1].expand(33, 70), base_pre[:33]),    # stride-0 rows, as a repeated feedback
    ]
    for grad, pre in cases:
        delta, grad_bias = epilogue(grad, pre, "tanh")
        want = _autograd_delta(grad.contiguous(), pre.contiguous(), "tanh", 0.01)
        assert delta.is_contiguous()
        torch.testing.assert_close(delta, want, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(grad_bias, want.sum(0), rtol=1e-12, atol=1e-12)


def test_grad_bias_does_not_depend_on_thread_count():
    grad, pre = _inputs(1000, 700)
    grad, pre = grad.float(), pre.float()
    first = fastcredit.dfa_backward_epilogue(grad, pre, "gelu")
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = fastcredit.dfa_backward_epilogue(grad, pre, "gelu")
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(first[0], single[0]) and torch.equal(first[1], single[1])


def test_empty_inputs(native_backend):
    epilogue = native_backend.op("dfa_backward_epilogue")
    delta, grad_bias = epilogue(torch.zeros(0, 5), torch.zeros(0, 5), "tanh")
    assert delta.shape == (0, 5) and torch.equal(grad_bias, torch.zeros(5))
    delta, grad_bias = epilogue(torch.zeros(3, 0), torch.zeros(3, 0), "tanh")
    assert delta.shape == (3, 0) and grad_bias.shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(native_backend, dtype):
    op = native_backend.library().dfa_backward_epilogue
    for n, d in [(1, 1), (7, 33), (130, 5)]:
        grad, pre = _inputs(n, d, dtype=dtype)
        torch.library.opcheck(op, (grad, pre, "leaky_relu", 0.2, False))
        torch.library.opcheck(op, (grad, torch.tanh(pre), "tanh", 0.01, True))


# ---- bad input --------------------------------------------------------------------------------
# ---- the CUDA kernels' column sums, in emulation -------------------------------------------------
# Slabs of 128 rows each give a partial sum per column; a second kernel adds the slabs' partials.
# FC_EMU_MAX_GRID_Y lowers grid.y (slabs per launch) so that blocks loop over several slabs.
@pytest.mark.parametrize("n, d", [(1, 10), (1000, 10), (2500, 3), (300, 70)])
def test_emulated_grad_bias_is_a_fixed_order_sum(monkeypatch, n, d):
    import backends

    epilogue = backends.get("cuda_emulated").op("dfa_backward_epilogue")
    grad, pre = (t.float() for t in _inputs(n, d))
    results = []
    for max_grid_y in ("65535", "3", "1"):
        monkeypatch.setenv("FC_EMU_MAX_GRID_Y", max_grid_y)
        results.append(epilogue(grad, pre, "tanh"))
    delta, grad_bias = results[0]
    # the same bits however the slabs are spread over blocks: no order depends on scheduling
    for other_delta, other_bias in results[1:]:
        assert torch.equal(other_delta, delta) and torch.equal(other_bias, grad_bias)
    want_delta, want_bias = fastcredit.dfa_backward_epilogue(grad, pre, "tanh")
    assert torch.equal(delta, want_delta)  # one float32 product per entry on both
    torch.testing.assert_close(grad_bias, want_bias, rtol=1e-5, atol=1e-5 * n**0.5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid"])
def test_emulated_half_precision_matches_cpu(monkeypatch, dtype, activation):
    import backends

    monkeypatch.setenv("FC_EMU_MAX_GRID_Y", "2")
    grad, pre = (t.to(dtype) for t in _inputs(700, 37))
    delta, grad_bias = backends.get("cuda_emulated").op("dfa_backward_epilogue")(
        grad, pre, activation)
    want_delta, want_bias = fastcredit.dfa_backward_epilogue(grad, pre, activation)
    assert delta.dtype == grad_bias.dtype == dtype
    # products in float32 rounded once, as on the CPU; sums of unrounded float32 products,
    # in another order, rounded once
    assert torch.equal(delta, want_delta)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(grad_bias, want_bias, rtol=eps, atol=eps)


@pytest.mark.parametrize("native", ["cpu", "cuda_emulated"])
def test_rejects_bad_inputs_with_named_problem(native):
    import backends

    epilogue = backends.get(native).op("dfa_backward_epilogue")
    ok = torch.zeros(3, 4)
    with pytest.raises(RuntimeError, match=r"grad must be 2-D \[N, D\], got 3-D"):
        epilogue(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), "tanh")
    with pytest.raises(RuntimeError, match=r"must have the same shape, got \[3, 4\] and \[4, 3\]"):
        epilogue(ok, torch.zeros(4, 3), "tanh")
    with pytest.raises(RuntimeError, match="must have the same dtype"):
        epilogue(ok, ok.double(), "tanh")
    with pytest.raises(RuntimeError, match="grad must be float32, float64, float16 or bfloat16"):
        epilogue(ok.long(), ok.long(), "tanh")
    with pytest.raises(RuntimeError, match="negative_slope must be finite"):
        epilogue(ok, ok, "leaky_relu", negative_slope=float("nan"))
    # the Python wrapper raises ValueError, the op boundary RuntimeError: same message
    with pytest.raises((RuntimeError, ValueError), match="unknown activation 'swish'"):
        epilogue(ok, ok, "swish")
    with pytest.raises(RuntimeError, match="unknown activation 'swish'"):
        backends.get(native).library().dfa_backward_epilogue(ok, ok, "swish", 0.01, False)
    for activation, slope in [("gelu", 0.01), ("softplus", 0.01), ("leaky_relu", -0.5)]:
        with pytest.raises(RuntimeError, match="cannot be computed from its output"):
            epilogue(ok, ok, activation, negative_slope=slope, saved_is_output=True)
