"""LRA-E beyond MLPs: convolution blocks :class:`LRAConv1d`, :class:`LRAConv2d` and
:class:`LRAConv3d`.

A conv block is LRA-E's hidden rule over feature maps: the error units ``e [N, C_out, *S]``
come from the pre-activation and the displacement of the same shape, elementwise (the fused
``lra_error`` op takes any shape); ``W.grad`` is the convolution weight gradient of ``e`` with
the input ``h`` divided by the batch size N (the conv analogue of ``e^T h / N``: with a mean
loss it is the true gradient when ``e`` is), ``b.grad`` sums ``e`` over batch and positions
divided by N, and the displacement sent down is the transposed convolution of ``e`` with the
error weights E (the conv weight's shape) in place of W. Modules without parameters between
blocks (pooling, flatten, dropout, an add of a residual connection) keep their true derivative:
the displacement passes through their ordinary backward. The refinement options of the linear
blocks (``refine_steps``, ``clip_direction``) are not offered here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ... import functional, ops
from ..._spec import LRA_ERRORS, check_choice, check_surrogate
from ..amp import apply_autocast
from ..mode import backprop_active
from .blocks import LRABlock, rule_surrogate
from .rule import Rule, _clip_norm, scaled, unscaled

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class ConvFn(torch.autograd.Function):
    """z = f(conv(h, W, b)) forward; LRA's rule over feature maps backward, on the
    displacement divided by the loss scale, its results multiplied by it (see
    :mod:`fastcredit.nn.lra.rule`)."""

    lra_hidden = True  # takes the loss scale from the block above

    @staticmethod
    def forward(ctx, h, weight, bias, feedback, rule: Rule, geometry: tuple):
        stride, padding, dilation, groups = geometry
        a = _CONV[weight.dim() - 2](h, weight, bias, stride, padding, dilation, groups)
        ctx.save_for_backward(h, bias, feedback, a)
        ctx.rule, ctx.geometry = rule, geometry
        return functional.activation(a, rule.activation, rule.negative_slope)

    @staticmethod
    @once_differentiable  # a learning rule, not a derivative: no second order
    def backward(ctx, displacement):
        h, bias, feedback, a = ctx.saved_tensors
        rule: Rule = ctx.rule
        stride, padding, dilation, groups = ctx.geometry
        scale, displacement = unscaled(ctx, displacement)
        e = ops.lra_error(a, displacement, rule.beta, rule.activation, rule.error,
                          rule.use_fprime, rule.negative_slope, rule.surrogate)
        need_h = ctx.needs_input_grad[0]
        es = e * scale.to(e.dtype)  # S e: the GEMMs below then give S-scaled gradients
        # One call for both: the input gradient uses the weight argument (E here), the weight
        # gradient only the input h and W's shape.
        grad_h, grad_sum, _ = torch.ops.aten.convolution_backward(
            es, h, feedback, None, stride, padding, dilation, False, [0] * len(stride), groups,
            [need_h, True, False])
        n = max(h.shape[0], 1)  # an empty batch has all-zero sums: zero gradients, not 0/0
        grad_w = grad_sum / n
        if rule.clip_update is not None:  # the unscaled update is clipped, then scaled
            (grad_w,) = scaled((_clip_norm(grad_w / scale.to(e.dtype), rule.clip_update),),
                               scale)
        grad_b = es.sum([0, *range(2, e.dim())]) / n if bias is not None else None
        grad_feedback = rule.gamma * grad_w if ctx.needs_input_grad[3] else None
        return grad_h, grad_w, grad_b, grad_feedback, None, None


def _tuple(value, dims: int, name: str) -> tuple[int, ...]:
    values = (value,) * dims if isinstance(value, int) else tuple(value)
    if len(values) != dims or not all(isinstance(v, int) for v in values):
        raise ValueError(f"{name} must be an int or {dims} ints, got {value!r}")
    return values


class _LRAConvNd(LRABlock):
    _dims = 0

    def __init__(self, in_channels: int, out_channels: int, kernel_size, activation: str = "tanh",
                 *, stride=1, padding=0, dilation=1, groups: int = 1, bias: bool = True,
                 beta: float = 0.1, gamma: float = 1.0, error: str = "gaussian",
                 use_fprime: bool = False, negative_slope: float = 0.01,
                 surrogate: str | None = "hardtanh", clip_update: float | None = None,
                 weight_init: str = "normal", weight_std: float = 0.1,
                 feedback_std: float = 0.1, device=None, dtype=None):
        functional.check_activation(activation)
        check_choice("error", error, LRA_ERRORS)
        check_surrogate(surrogate)
        dims = self._dims
        kernel = _tuple(kernel_size, dims, "kernel_size")
        if not (isinstance(groups, int) and groups >= 1 and in_channels % groups == 0
                and out_channels % groups == 0):
            raise ValueError(f"groups must be an int >= 1 dividing in_channels ({in_channels}) "
                             f"and out_channels ({out_channels}), got {groups!r}")
        # The base builds [out, in/groups * prod(kernel)] matrices; viewed as conv kernels.
        super().__init__(in_channels // groups * math.prod(kernel), out_channels, bias, beta,
                         gamma, 1, None, clip_update, weight_init, weight_std, feedback_std,
                         device, dtype)
        shape = (out_channels, in_channels // groups, *kernel)
        self.weight = nn.Parameter(self.weight.detach().reshape(shape))
        if isinstance(self.feedback, nn.Parameter):
            self.feedback = nn.Parameter(self.feedback.detach().reshape(shape))
        else:
            self.register_buffer("feedback", self.feedback.reshape(shape))
        self.reset_parameters()  # fan-in/out of the conv shape for "xavier"
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel
        self.stride = _tuple(stride, dims, "stride")
        self.padding = _tuple(padding, dims, "padding")
        self.dilation = _tuple(dilation, dims, "dilation")
        self.groups = groups
        self.activation, self.error = activation, error
        self.use_fprime, self.negative_slope = bool(use_fprime), float(negative_slope)
        self.surrogate = surrogate

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() != self._dims + 2 or h.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: expected input [N, {self.in_channels}, "
                             f"{', '.join('*' * self._dims)}], got {tuple(h.shape)}")
        geometry = (self.stride, self.padding, self.dilation, self.groups)
        if backprop_active():
            a = _CONV[self._dims](h, self.weight, self.bias, *geometry)
            return functional.activation(a, self.activation, self.negative_slope)
        rule = self._rule(activation=self.activation, error=self.error,
                          use_fprime=self.use_fprime, negative_slope=self.negative_slope,
                          surrogate=rule_surrogate(self.activation, self.surrogate))
        return apply_autocast(ConvFn, (h, self.weight, self.bias, self.feedback), rule, geometry)

    def extra_repr(self) -> str:
        surrogate = (f", surrogate={self.surrogate!r}"
                     if rule_surrogate(self.activation, self.surrogate) else "")
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, activation={self.activation!r}, "
                f"beta={self.beta}, gamma={self.gamma}, error={self.error!r}{surrogate}")


class LRAConv1d(_LRAConvNd):
    """A hidden LRA-E convolution block ``z = f(conv1d(h, W, b))``: h [N, C_in, L] ->
    z [N, C_out, L']. Geometry (``stride``, ``padding`` (ints only), ``dilation``, ``groups``)
    as :class:`torch.nn.Conv1d`; the rule's options as :class:`LRALinear` (no
    ``refine_steps``/``clip_direction``). ValueError for bad options or a wrong input shape."""

    _dims = 1


class LRAConv2d(_LRAConvNd):
    """:class:`LRAConv1d` over images: h [N, C_in, H, W] -> z [N, C_out, H', W']."""

    _dims = 2


class LRAConv3d(_LRAConvNd):
    """:class:`LRAConv1d` over volumes: h [N, C_in, D, H, W] -> z [N, C_out, D', H', W']."""

    _dims = 3
