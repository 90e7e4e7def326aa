"""The activations f and derivatives f' that fastcredit's layers compute in PyTorch.

Production code, not the oracle: tables built once at import, and f' written as closed forms
(no nested autograd). Each f' is the derivative PyTorch's own backward uses, so a layer's
local gradient equals backprop's; the fused kernels compute the same functions
(``csrc/fastcredit/activations.h``). ``sign`` uses the surrogate derivative ``1{|a| <= 1}``
(the straight-through estimator clipped to hardtanh's range).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._spec import ACTIVATIONS, ACTIVATIONS_FROM_OUTPUT, check_choice

_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SOFTPLUS_THRESHOLD = 20.0  # F.softplus's default: above it, softplus(a) = a and f' = 1


def _gelu_derivative(a: torch.Tensor, slope: float) -> torch.Tensor:
    # d/da [a Φ(a)] = Φ(a) + a φ(a), the exact (erf) GELU.
    cdf = 0.5 * (1.0 + torch.erf(a * _INV_SQRT_2))
    return cdf + a * torch.exp(-0.5 * a * a) * _INV_SQRT_2PI


def _softplus_derivative(a: torch.Tensor, slope: float) -> torch.Tensor:
    return torch.where(a > _SOFTPLUS_THRESHOLD, torch.ones_like(a), torch.sigmoid(a))


_VALUE = {
    "identity": lambda a, slope: a,
    "tanh": lambda a, slope: torch.tanh(a),
    "sigmoid": lambda a, slope: torch.sigmoid(a),
    "relu": lambda a, slope: torch.relu(a),
    "leaky_relu": lambda a, slope: F.leaky_relu(a, slope),
    "relu6": lambda a, slope: F.relu6(a),
    "softplus": lambda a, slope: F.softplus(a),
    "gelu": lambda a, slope: F.gelu(a),
    "sign": lambda a, slope: torch.sign(a),
}

_DERIVATIVE = {
    "identity": lambda a, slope: torch.ones_like(a),
    "tanh": lambda a, slope: 1 - torch.tanh(a).square(),
    "sigmoid": lambda a, slope: (s := torch.sigmoid(a)) * (1 - s),
    "relu": lambda a, slope: (a > 0).to(a.dtype),
    "leaky_relu": lambda a, slope: torch.where(a > 0, 1.0, torch.full_like(a, slope)),
    "relu6": lambda a, slope: ((a > 0) & (a < 6)).to(a.dtype),
    "softplus": _softplus_derivative,
    "gelu": _gelu_derivative,
    "sign": lambda a, slope: (a.abs() <= 1).to(a.dtype),
}

# f'(a) in terms of y = f(a), as PyTorch's backward writes it. Its threshold/hardtanh backward
# tests "y <= 0", so the derivative at a NaN output is 1, as there.
_DERIVATIVE_FROM_OUTPUT = {
    "identity": lambda y, slope: torch.ones_like(y),
    "tanh": lambda y, slope: 1 - y * y,
    "sigmoid": lambda y, slope: y * (1 - y),
    "relu": lambda y, slope: (~(y <= 0)).to(y.dtype),
    "relu6": lambda y, slope: (~((y <= 0) | (y >= 6))).to(y.dtype),
    "leaky_relu": lambda y, slope: torch.where(y > 0, 1.0, torch.full_like(y, slope)),
}
assert set(_VALUE) == set(_DERIVATIVE) == set(ACTIVATIONS)
assert set(_DERIVATIVE_FROM_OUTPUT) == set(ACTIVATIONS_FROM_OUTPUT)


def check_activation(name: str) -> None:
    """ValueError unless ``name`` is one of :data:`fastcredit._spec.ACTIVATIONS`."""
    check_choice("activation", name, ACTIVATIONS)


def activation(a: torch.Tensor, name: str, negative_slope: float = 0.01) -> torch.Tensor:
    """f(a), elementwise; ``negative_slope`` is leaky_relu's. ``name`` must be checked."""
    return _VALUE[name](a, negative_slope)


def activation_derivative(a: torch.Tensor, name: str,
                          negative_slope: float = 0.01) -> torch.Tensor:
    """f'(a), elementwise, as PyTorch's backward of f (sign: the surrogate 1{|a| <= 1})."""
    return _DERIVATIVE[name](a, negative_slope)


def derivative_from_output_supported(name: str, negative_slope: float = 0.01) -> bool:
    """Whether f' follows from the output y = f(a) alone (leaky_relu: slope >= 0)."""
    return name in _DERIVATIVE_FROM_OUTPUT and not (name == "leaky_relu" and negative_slope < 0)


def activation_derivative_from_output(y: torch.Tensor, name: str,
                                      negative_slope: float = 0.01) -> torch.Tensor:
    """f'(a) from y = f(a), for the activations :func:`derivative_from_output_supported`."""
    return _DERIVATIVE_FROM_OUTPUT[name](y, negative_slope)


def softmax_error_scale(error: torch.Tensor, logits: torch.Tensor,
                        labels: torch.Tensor) -> torch.Tensor:
    """The factor ``k`` in ``error = k * (softmax(logits) - onehot(labels))``, as a 0-dim
    tensor (no host read): the size a softmax cross-entropy's reduction and any loss scaling
    (``GradScaler``, ``loss / k``) gave the error, which a rule that uses only the error's
    sign or the labels cannot otherwise see.

    ``error``, ``logits``: ``[rows, C]``; ``labels``: ``[rows]`` int64. Fitted by least
    squares over the rows whose error is not all zero (rows a loss ignores, e.g.
    ``ignore_index``); 0 when no row is left. Exact for a (weighted-equally) softmax
    cross-entropy; for another loss it is only the best fit of that form. Computed in at
    least float32: with half-precision errors the sums would overflow at GradScaler's scales.
    """
    dtype = torch.promote_types(error.dtype, torch.float32)
    error = error.to(dtype)
    unit = torch.softmax(logits.to(dtype), -1)
    unit = unit - F.one_hot(labels, unit.shape[-1]).to(dtype)
    unit = unit * (error != 0).any(-1, keepdim=True).to(dtype)
    numerator, denominator = (error * unit).sum(), (unit * unit).sum()
    safe = denominator.clamp_min(torch.finfo(dtype).tiny)
    return torch.where(denominator > 0, numerator / safe, torch.zeros_like(numerator))
