"""Typed Python wrappers over the ``torch.ops.fastcredit`` ops, with their fake (meta)
implementations for ``torch.compile`` and their autograd formulas.

Every op here has a pure-PyTorch twin of the same name in :mod:`fastcredit.reference`.
"""

from __future__ import annotations

import torch

from .reference import ACTIVATIONS, DISTS, SIGN_FEEDBACK_MODES

_UINT64_LIMIT = 1 << 64
_INT64_LIMIT = 1 << 63

# The op library the wrappers call. Tests point it at torch.ops.fastcredit_emu (the CUDA kernels
# run in emulation) to run the same wrappers, layers and autograd formulas on those kernels.
_lib = torch.ops.fastcredit


def _seed_as_int64(seed: int) -> int:
    """Seeds are 64-bit patterns: accept 0 <= seed < 2**64, pass them as signed int64."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < _UINT64_LIMIT:
        raise ValueError(f"seed must satisfy 0 <= seed < 2**64, got {seed}")
    return seed - _UINT64_LIMIT if seed >= 1 << 63 else seed


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    if value >= _INT64_LIMIT:  # the ops take int64
        raise ValueError(f"{name} must be < 2**63, got {value}")


def _check_dist(dist: str) -> None:
    if dist not in DISTS:
        raise ValueError(f"unknown dist {dist!r}; expected one of {DISTS}")


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


def feedback_fill_(
    out: torch.Tensor, seed: int, *, dist: str = "uniform", scale: float = 1.0
) -> torch.Tensor:
    """Fill ``out [rows, cols]`` in place with the seeded feedback matrix; returns ``out``.

    Entry (r, c) depends only on (seed, r, c), so any two calls, thread counts or devices
    agree bit for bit. ``dist``: "uniform" ([-1, 1)), "normal" (mean 0, std 1) or
    "rademacher" (+-1); every value is multiplied by ``scale``.
    """
    _check_dist(dist)
    _lib.feedback_fill_(out, _seed_as_int64(seed), dist, float(scale))
    return out


def feedback_matrix(
    seed: int,
    rows: int,
    cols: int,
    *,
    dist: str = "uniform",
    scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The seeded feedback matrix ``F(seed)[:rows, :cols]`` times ``scale``: ``[rows, cols]``.

    A submatrix of a larger one: ``feedback_matrix(s, r, c)`` equals
    ``feedback_matrix(s, R, C)[:r, :c]`` for any R >= r, C >= c.
    """
    _check_size("rows", rows)
    _check_size("cols", cols)
    out = torch.empty((rows, cols), dtype=dtype, device=device)
    return feedback_fill_(out, seed, dist=dist, scale=scale)


def seeded_project(
    x: torch.Tensor,
    seed: int,
    cols: int,
    *,
    dist: str = "uniform",
    scale: float = 1.0,
    transpose: bool = False,
) -> torch.Tensor:
    """``x [N, K] @ feedback_matrix(seed, K, cols) -> [N, cols]`` without storing the matrix.

    With ``transpose=True`` it is ``x @ feedback_matrix(seed, cols, K).T``, the gradient of
    the untransposed form. float16/bfloat16 inputs are accumulated in float32. Differentiable
    in ``x``.
    """
    _check_size("cols", cols)
    _check_dist(dist)
    return _lib.seeded_project(x, _seed_as_int64(seed), cols, dist, float(scale), bool(transpose))


def lra_error(
    pre_activation: torch.Tensor,
    displacement: torch.Tensor,
    beta: float,
    activation: str = "tanh",
    error: str = "gaussian",
    use_fprime: bool = False,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """LRA-E error units in one pass: ``a, d [any shape] -> e [same shape]``.

    The target is ``y = f(a - beta * d)``; ``e = f(a) - y`` (``error="gaussian"``) or
    ``2 (f(a) - y) / (1 + (f(a) - y)^2)`` (``"cauchy"``), multiplied by ``f'(a)`` when
    ``use_fprime`` (sign uses the surrogate derivative ``1{|a| <= 1}``).
    """
    _check_activation(activation)
    if error not in ("gaussian", "cauchy"):
        raise ValueError(f"unknown error {error!r}; expected 'gaussian' or 'cauchy'")
    return _lib.lra_error(pre_activation, displacement, float(beta), activation, error,
                          bool(use_fprime), float(negative_slope))


def sign_feedback(
    weight: torch.Tensor,
    mode: str = "scalar",
    *,
    scale: float = 1.0,
    magnitude: torch.Tensor | None = None,
    seed: int = 0,
    step: int = 0,
    dist: str = "uniform",
) -> torch.Tensor:
    """Sign-concordant feedback ``scale * |M| ⊙ sign(W)`` with W's shape, built in one pass.

    ``weight``: ``[out, in, *kernel]`` (rank >= 2), viewed as ``[out, rest]`` for the seeded
    modes. ``mode`` picks |M|: ``"scalar"`` (1: uSF), ``"stored"`` (``|magnitude|``, W's shape
    and dtype: frSF), ``"seeded"`` (``|feedback_matrix(seed, out, rest, dist=dist)|``: frSF
    without storage) or ``"seeded_step"`` (the same with the seed
    ``reference.step_seed(seed, step)``: brSF's fresh draw per step). sign(0) = 0 and
    sign(NaN) = NaN. Returns a new contiguous tensor; differentiable in ``magnitude``.
    """
    if mode not in SIGN_FEEDBACK_MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {SIGN_FEEDBACK_MODES}")
    _check_dist(dist)
    _check_size("step", step)
    return _lib.sign_feedback(
        weight, mode, float(scale), magnitude, _seed_as_int64(seed), step, dist
    )


def dfa_backward_epilogue(
    grad: torch.Tensor,
    saved: torch.Tensor,
    activation: str = "tanh",
    *,
    negative_slope: float = 0.01,
    saved_is_output: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused local part of a DFA layer's backward, in one pass over its inputs.

    ``grad [N, D]`` is the feedback arriving at the layer's output ``f(a)``; ``saved [N, D]``
    is the pre-activation ``a``, or with ``saved_is_output=True`` the output ``f(a)`` (for
    identity, tanh, sigmoid, relu, relu6 and leaky_relu with a slope >= 0, whose derivative
    follows from the output as in PyTorch's own backward: no recomputation, and nothing to
    keep beyond the output). Returns ``(delta, grad_bias)``: ``delta [N, D] = grad * f'(a)``
    (contiguous) and ``grad_bias [D] = delta.sum(0)``. ``f'`` is PyTorch's derivative of
    ``activation`` (one of ``ACTIVATIONS``; ``negative_slope`` is leaky_relu's). Inputs may be
    strided (e.g. an expanded ``grad``); float16/bfloat16 compute in float32.
    """
    _check_activation(activation)
    return _lib.dfa_backward_epilogue(
        grad, saved, activation, float(negative_slope), bool(saved_is_output)
    )


# The fake (meta) impls below repeat csrc/checks.h's dtype and device checks: a meta input
# dispatches here even when the other input is on the CPU, so the C++ checks never see it.
def _check_alike(op: str, names: str, a: torch.Tensor, b: torch.Tensor) -> None:
    torch._check(a.dtype == b.dtype,
                 lambda: f"{op}: {names} must have the same dtype, got {a.dtype} and {b.dtype}")
    torch._check(a.device == b.device, lambda: f"{op}: {names} must be on the same device, "
                 f"got {a.device} and {b.device}")


def _feedback_fill_fake(out, seed, dist="uniform", scale=1.0):
    torch._check(out.dim() == 2, lambda: f"feedback_fill_: out must be 2-D, got {out.dim()}-D")
    return None


def _seeded_project_fake(x, seed, cols, dist="uniform", scale=1.0, transpose=False):
    torch._check(x.dim() == 2, lambda: f"seeded_project: x must be 2-D, got {x.dim()}-D")
    return x.new_empty((x.shape[0], cols))


def _lra_error_fake(pre_activation, displacement, beta, activation="tanh", error="gaussian",
                    use_fprime=False, negative_slope=0.01):
    torch._check(pre_activation.shape == displacement.shape,
                 lambda: "lra_error: pre_activation and displacement must have the same shape")
    _check_alike("lra_error", "pre_activation and displacement", pre_activation, displacement)
    return torch.empty_like(pre_activation, memory_format=torch.contiguous_format)


def _sign_feedback_fake(weight, mode, scale=1.0, magnitude=None, seed=0, step=0, dist="uniform"):
    torch._check(
        weight.dim() >= 2,
        lambda: f"sign_feedback: weight must have at least 2 dims, got {weight.dim()}-D",
    )
    if magnitude is not None:
        _check_alike("sign_feedback", "weight and magnitude", weight, magnitude)
    return weight.new_empty(weight.shape)


def _dfa_backward_epilogue_fake(grad, saved, activation, negative_slope=0.01,
                                saved_is_output=False):
    torch._check(
        grad.dim() == 2, lambda: f"dfa_backward_epilogue: grad must be 2-D, got {grad.dim()}-D"
    )
    torch._check(
        grad.shape == saved.shape,
        lambda: "dfa_backward_epilogue: grad and saved must have the same shape",
    )
    _check_alike("dfa_backward_epilogue", "grad and saved", grad, saved)
    return grad.new_empty(grad.shape), grad.new_empty((grad.shape[1],))


def _seeded_project_setup_context(ctx, inputs, output):
    x, seed, _cols, dist, scale, transpose = inputs
    ctx.in_features = x.shape[1]
    ctx.args = (seed, dist, scale, transpose)


def _seeded_project_backward(op):
    def backward(ctx, grad_out):
        seed, dist, scale, transpose = ctx.args
        # d(x @ B)/dx = grad @ B^T: the same matrix with the opposite orientation.
        grad_x = op(grad_out, seed, ctx.in_features, dist, scale, not transpose)
        return grad_x, None, None, None, None, None

    return backward


def _sign_feedback_setup_context(ctx, inputs, output):
    weight, mode, scale, magnitude, *_ = inputs
    if mode == "stored" and ctx.needs_input_grad[3]:
        ctx.save_for_backward(weight, magnitude)
    ctx.scale = scale


def _sign_feedback_backward(ctx, grad):
    # B is piecewise constant in W (gradient 0); for a stored magnitude
    # d(scale * |M| * sign W)/dM = scale * sign(M) * sign(W).
    grad_magnitude = None
    if ctx.saved_tensors:
        weight, magnitude = ctx.saved_tensors
        grad_magnitude = grad * ctx.scale * torch.sign(magnitude) * torch.sign(weight)
    return None, None, None, grad_magnitude, None, None, None


def register_python_impls(namespace: str) -> None:
    """Fake impls and autograd formulas for the ops of ``namespace``: ``fastcredit``, or the
    test-only ``fastcredit_emu`` whose ops have the same schemas."""
    lib = getattr(torch.ops, namespace)
    torch.library.register_fake(f"{namespace}::feedback_fill_", _feedback_fill_fake)
    torch.library.register_fake(f"{namespace}::seeded_project", _seeded_project_fake)
    torch.library.register_fake(f"{namespace}::lra_error", _lra_error_fake)
    torch.library.register_fake(
        f"{namespace}::dfa_backward_epilogue", _dfa_backward_epilogue_fake
    )
    torch.library.register_autograd(
        f"{namespace}::seeded_project",
        _seeded_project_backward(lib.seeded_project),
        setup_context=_seeded_project_setup_context,
    )
    torch.library.register_fake(f"{namespace}::sign_feedback", _sign_feedback_fake)
    torch.library.register_autograd(
        f"{namespace}::sign_feedback",
        _sign_feedback_backward,
        setup_context=_sign_feedback_setup_context,
    )


register_python_impls("fastcredit")
