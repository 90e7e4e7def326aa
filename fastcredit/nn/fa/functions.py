"""The autograd Functions of the FA family: forward as the torch layer, backward with the
layer's feedback matrix B in place of W for the input gradient (see :mod:`.rule`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


class _LinearFunction(torch.autograd.Function):
    # transposed: W (and a stored B) are laid out [in, out] (transformers' Conv1D), y = x W + b
    @staticmethod
    def forward(ctx, x, weight, bias, stored, draw, rule, transposed=False):
        ctx.rule = rule
        ctx.transposed = transposed
        ctx.save_for_backward(x, weight, stored, draw)
        return F.linear(x, weight.t() if transposed else weight, bias)

    @staticmethod
    @once_differentiable  # the feedback path has no meaningful second derivative
    def backward(ctx, grad_out):
        x, weight, stored, draw = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad, inputs = grad_out, x
        if grad_out.dim() != 2:  # [*, out] -> [rows, out]; rows spelled out: reshape(-1, 0)
            rows = math.prod(grad_out.shape[:-1])  # is ambiguous for a 0-feature layer
            grad = grad_out.reshape(rows, grad_out.shape[-1])
            inputs = x.reshape(rows, x.shape[-1])
        grad_x = grad_w = grad_b = None
        if need_x:
            if ctx.transposed:  # the rule works on the [out, in] orientation
                weight = weight.t().contiguous()
                stored = None if stored is None else stored.t().contiguous()
            grad_x = ctx.rule.project(grad, weight, stored, draw)
            if grad_out.dim() != 2:
                grad_x = grad_x.reshape(x.shape)
        if need_w:
            grad_w = grad.t().mm(inputs)
            if ctx.transposed:
                grad_w = grad_w.t()
        if need_b:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b, None, None, None, None


class _ConvFunction(torch.autograd.Function):
    # transposed: a ConvTranspose (W [in, out / groups, *kernel]); its input gradient is the
    # ordinary convolution of δ with B
    @staticmethod
    def forward(ctx, x, weight, bias, stored, draw, rule, stride, padding, dilation, groups,
                transposed=False, output_padding=None):
        ctx.rule = rule
        output_padding = [0] * len(stride) if output_padding is None else output_padding
        ctx.conv = (stride, padding, dilation, transposed, output_padding, groups)
        ctx.bias_sizes = None if bias is None else list(bias.shape)
        ctx.save_for_backward(x, weight, stored, draw)
        return torch.convolution(x, weight, bias, stride, padding, dilation, transposed,
                                 output_padding, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight, stored, draw = ctx.saved_tensors
        mask = list(ctx.needs_input_grad[:3])
        # The weight argument is read only for the input gradient; the weight gradient needs
        # only its shape. So B is built only when the input gradient is wanted, and freed here.
        kernel = ctx.rule.matrix(weight, stored, draw) if mask[0] else weight
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out, x, kernel, ctx.bias_sizes, *ctx.conv, mask,
        )
        return grad_x, grad_w, grad_b, *([None] * 9)
