"""DFALinear: a fused DFA block, linear + activation + feedback point."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ... import functional, ops
from ..amp import apply_autocast
from ..mode import backprop_active
from .point import DFAPoint


class _DFALinearFunction(torch.autograd.Function):
    """``h = f(x W^T + b)``; backward: the feedback P arriving at h gives
    ``delta = P * f'(a)`` and ``grad_b = sum_n delta`` (one fused kernel) and
    ``grad_W = delta^T x`` (one GEMM). No gradient for x: a DFA block's input gets none.

    Where f' follows from the output (tanh, sigmoid, relu, ...) the output h is saved, not a:
    h is the next block's input and kept anyway, so the layer adds no activation memory and
    its backward recomputes no transcendental."""

    @staticmethod
    def forward(ctx, x, weight, bias, name, negative_slope):
        x2 = x.reshape(-1, x.shape[-1])
        a = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
        h = functional.activation(a, name, negative_slope)
        ctx.saved_is_output = functional.derivative_from_output_supported(name, negative_slope)
        ctx.save_for_backward(x2 if weight.requires_grad else None,
                              h if ctx.saved_is_output else a)
        ctx.activation = name
        ctx.negative_slope = negative_slope
        return h.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @once_differentiable  # the feedback P is no derivative: a second order is undefined
    def backward(ctx, grad_h):
        x2, saved = ctx.saved_tensors
        delta, grad_bias = ops.dfa_backward_epilogue(
            grad_h.reshape(saved.shape), saved, ctx.activation,
            negative_slope=ctx.negative_slope, saved_is_output=ctx.saved_is_output,
        )
        grad_weight = delta.t().mm(x2) if ctx.needs_input_grad[1] else None
        grad_bias = grad_bias if ctx.needs_input_grad[2] else None
        return None, grad_weight, grad_bias, None, None


class DFALinear(nn.Module):
    """``point(f(x W^T + b))``: a linear layer, its activation and a :class:`DFAPoint`, with a
    fused backward.

    ``x: [..., in_features] -> [..., out_features]``. In the backward pass the feedback that
    the :class:`DFAOutput` delivers to the point, P, gives ``delta = P * f'(a)`` and
    ``grad_bias = sum_n delta`` in one kernel (:func:`fastcredit.ops.dfa_backward_epilogue`)
    and ``grad_weight = delta^T x`` in one GEMM. The input gets no gradient (it is the
    previous block's detached output, or data). Pass the layer (or ``layer.point``) to
    ``DFAOutput(points=...)``.

    Args:
        activation: one of ``fastcredit._spec.ACTIVATIONS`` (identity, tanh, sigmoid, relu,
            leaky_relu, relu6, softplus, gelu; sign with the surrogate f' 1{|a| <= 1}); f' is
            PyTorch's derivative.
        negative_slope: leaky_relu's slope.
        batch_dims: the point's batch dims (default: the output's); see :class:`DFAPoint`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str = "tanh",
        *,
        bias: bool = True,
        negative_slope: float = 0.01,
        batch_dims: Sequence[int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        functional.check_activation(activation)
        if not math.isfinite(negative_slope):
            raise ValueError(f"negative_slope must be finite, got {negative_slope}")
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.negative_slope = float(negative_slope)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.point = DFAPoint(batch_dims=batch_dims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's initialisation."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"DFALinear expected inputs [..., {self.in_features}], got "
                             f"{list(x.shape)}")
        if backprop_active():
            a = torch.nn.functional.linear(x, self.weight, self.bias)
            return functional.activation(a, self.activation, self.negative_slope)
        h = apply_autocast(_DFALinearFunction, (x, self.weight, self.bias), self.activation,
                           self.negative_slope)
        return self.point(h)

    def extra_repr(self) -> str:
        slope = f", negative_slope={self.negative_slope}" if self.activation == "leaky_relu" else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, activation={self.activation!r}{slope}")
