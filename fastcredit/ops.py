"""Typed Python wrappers over the ``torch.ops.fastcredit`` ops, with their fake (meta)
implementations for ``torch.compile`` and their autograd formulas.

Every op here has a pure-PyTorch twin of the same name in :mod:`fastcredit.reference` (the
tests' oracle; nothing in the library imports it). Option names come from
:mod:`fastcredit._spec`.
"""

from __future__ import annotations

import contextlib
import threading

import torch

from ._spec import (
    DISTS,
    LRA_ERRORS,
    SIGN_FEEDBACK_MODES,
    check_choice,
    check_seed,
    check_size,
    check_surrogate,
    seed_as_int64,
)
from .functional import check_activation


class _Library(threading.local):
    """The op library the wrappers call, per thread. Default: the compiled ops."""

    ops = torch.ops.fastcredit


_library = _Library()


@contextlib.contextmanager
def use_library(namespace: str):
    """Within the block, on this thread, the wrappers (and every layer built on them) call
    ``torch.ops.<namespace>``, which must define fastcredit's schemas and have
    :func:`register_python_impls` applied; the tests run the emulated CUDA kernels
    (``fastcredit_emu``) this way."""
    previous, _library.ops = _library.ops, getattr(torch.ops, namespace)
    try:
        yield
    finally:
        _library.ops = previous


def _call(op, *args):
    """``op(*args)`` for a functional (out-of-place) op. Called with grad mode off (a layer's
    backward, evaluation), it dispatches below the autograd keys: the Python autograd kernel
    would record nothing then, and its re-dispatch costs ~6 µs per call. While tracing
    (torch.compile) the call is left as it is."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return op(*args)
    with torch._C._AutoDispatchBelowADInplaceOrView():
        return op(*args)


def _int64_seed(seed) -> int:
    return seed_as_int64(check_seed(seed))


def feedback_fill_(
    out: torch.Tensor, seed: int, *, dist: str = "uniform", scale: float = 1.0
) -> torch.Tensor:
    """Fill ``out [rows, cols]`` in place with the seeded feedback matrix; returns ``out``.

    Entry (r, c) depends only on (seed, r, c), so any two calls, thread counts or devices
    agree bit for bit. ``dist``: "uniform" ([-1, 1)), "normal" (mean 0, std 1) or
    "rademacher" (+-1); every value is multiplied by ``scale``. "uniform32" and "normal32"
    are the same distributions computed in float32 for GPUs with slow FP64 (docs/kernels.md):
    deterministic per device, but not bit-identical across devices; they need |scale| within
    float32's range (RuntimeError otherwise).
    """
    check_choice("dist", dist, DISTS)
    _library.ops.feedback_fill_(out, _int64_seed(seed), dist, float(scale))
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
    check_size("rows", rows)
    check_size("cols", cols)
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
    check_size("cols", cols)
    check_choice("dist", dist, DISTS)
    return _call(_library.ops.seeded_project, x, _int64_seed(seed), cols, dist, float(scale),
                                       bool(transpose))


def lra_error(
    pre_activation: torch.Tensor,
    displacement: torch.Tensor,
    beta: float,
    activation: str = "tanh",
    error: str = "gaussian",
    use_fprime: bool = False,
    negative_slope: float = 0.01,
    surrogate: str | None = None,
) -> torch.Tensor:
    """LRA-E error units in one pass: ``a, d [any shape] -> e [same shape]``.

    The target is ``y = f(a - beta * d)``; ``e = f(a) - y`` (``error="gaussian"``) or
    ``2 (f(a) - y) / (1 + (f(a) - y)^2)`` (``"cauchy"``), multiplied by ``f'(a)`` when
    ``use_fprime`` (sign uses the surrogate derivative ``1{|a| <= 1}``). ``surrogate``
    ("hardtanh") replaces f by s in both the target and ``f(a)``: ``y = s(a - beta d)``,
    ``e = s(a) - y`` (fastcredit's choice for sign; ValueError for an unknown name).
    """
    check_activation(activation)
    check_choice("error", error, LRA_ERRORS)
    check_surrogate(surrogate)
    return _call(_library.ops.lra_error, pre_activation, displacement, float(beta), activation,
                 error, bool(use_fprime), float(negative_slope), surrogate)


def sign_feedback(
    weight: torch.Tensor,
    mode: str = "scalar",
    *,
    scale: float = 1.0,
    magnitude: torch.Tensor | None = None,
    seed: int = 0,
    step: int | torch.Tensor = 0,
    dist: str = "uniform",
) -> torch.Tensor:
    """Sign-concordant feedback ``scale * |M| ⊙ sign(W)`` with W's shape, built in one pass.

    ``weight``: ``[out, in, *kernel]`` (rank >= 2), viewed as ``[out, rest]`` for the seeded
    modes. ``mode`` picks |M|: ``"scalar"`` (1: uSF), ``"stored"`` (``|magnitude|``, W's shape
    and dtype: frSF), ``"seeded"`` (``|feedback_matrix(seed, out, rest, dist=dist)|``: frSF
    without storage) or ``"seeded_step"`` (the same with the seed ``step_seed(seed, step)``
    of ``csrc/fastcredit/sign_feedback.h``: brSF's draw number ``step``). ``step`` is an int
    or a 0-d int64 tensor (read on the host: keep it on the CPU, as brSF layers do, so no
    device synchronisation happens; under ``torch.compile`` a tensor is a graph input, an
    int a constant). sign(0) = 0 and sign(NaN) = NaN. Returns a new contiguous tensor;
    differentiable in ``magnitude``.
    """
    check_choice("mode", mode, SIGN_FEEDBACK_MODES)
    check_choice("dist", dist, DISTS)
    if not isinstance(step, torch.Tensor):
        check_size("step", step)
        # only 'seeded_step' reads it: no tensor is made on the other modes' hot path
        step = torch.tensor(step, dtype=torch.int64) if mode == "seeded_step" else None
    return _call(_library.ops.sign_feedback, weight, mode, float(scale), magnitude,
                 _int64_seed(seed), step, dist)


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
    check_activation(activation)
    return _call(_library.ops.dfa_backward_epilogue, grad, saved, activation,
                 float(negative_slope), bool(saved_is_output))


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
                    use_fprime=False, negative_slope=0.01, surrogate=None):
    torch._check(pre_activation.shape == displacement.shape,
                 lambda: "lra_error: pre_activation and displacement must have the same shape")
    _check_alike("lra_error", "pre_activation and displacement", pre_activation, displacement)
    return torch.empty_like(pre_activation, memory_format=torch.contiguous_format)


def _sign_feedback_fake(weight, mode, scale=1.0, magnitude=None, seed=0, step=None,
                        dist="uniform"):
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
