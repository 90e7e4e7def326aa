"""LRA-E's learning rule as autograd Functions: what a hidden or output block's backward does
with the displacement (or error) arriving from above. See :mod:`fastcredit.nn.lra`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ... import functional, ops


@dataclass(frozen=True)
class Rule:
    beta: float
    gamma: float
    refine_steps: int
    clip_direction: float | None
    clip_update: float | None
    # hidden blocks only
    activation: str = "identity"
    error: str = "gaussian"
    use_fprime: bool = False
    negative_slope: float = 0.01
    surrogate: str | None = None  # resolved by the block: set only for a step-like activation


def _clip_norm(t: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """``t`` scaled down to Frobenius norm ``max_norm`` if above it; computed on the device
    (no host read of the norm)."""
    if max_norm is None:
        return t
    factor = (max_norm / torch.linalg.vector_norm(t)).clamp(max=1.0)
    return t * factor.to(t.dtype)


def _target_value(x: torch.Tensor, rule: Rule) -> torch.Tensor:
    """What targets and error units are formed through: the surrogate s, or f itself."""
    if rule.surrogate == "hardtanh":
        return F.hardtanh(x)
    return functional.activation(x, rule.activation, rule.negative_slope)


def _local_error(z: torch.Tensor, target: torch.Tensor, rule: Rule, a: torch.Tensor):
    diff = z - target
    e = diff if rule.error == "gaussian" else 2 * diff / (1 + diff * diff)
    if rule.use_fprime:
        e = e * functional.activation_derivative(a, rule.activation, rule.negative_slope)
    return e


def _displacement_below(h, e, feedback, rule: Rule, error_at):
    """What the block sends down in place of dL/dh: ``e E`` (K = 1, no clipping), or the
    refined move of its input divided by beta. ``error_at(h_moved)`` re-runs the block."""
    if rule.refine_steps == 1 and rule.clip_direction is None:
        return e @ feedback
    moved = h
    for step in range(rule.refine_steps):
        error = e if step == 0 else error_at(moved)
        moved = moved - rule.beta * _clip_norm(error @ feedback, rule.clip_direction)
    return (h - moved) / rule.beta


def _gradients(ctx, h, e, feedback, rule: Rule, has_bias: bool):
    """W, b, E gradients of the LRA rule from error units e [..., out] and input h [..., in]."""
    e2, h2 = e.reshape(-1, e.shape[-1]), h.reshape(-1, h.shape[-1])
    n = max(e2.shape[0], 1)  # an empty batch has all-zero sums: zero gradients, not 0/0
    # 1/N applied inside the GEMM (alpha; beta = 0 ignores the input): no extra pass over W
    unused = e2.new_zeros(()).expand(e2.shape[1], h2.shape[1])
    grad_w = _clip_norm(torch.addmm(unused, e2.T, h2, beta=0, alpha=1 / n),
                        rule.clip_update)
    grad_b = e2.sum(0) / n if has_bias else None
    grad_feedback = rule.gamma * grad_w if ctx.needs_input_grad[3] else None
    return grad_w, grad_b, grad_feedback


class HiddenFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, feedback, rule: Rule):
        a = F.linear(h, weight, bias)
        ctx.save_for_backward(h, weight, bias, feedback, a)
        ctx.rule = rule
        return functional.activation(a, rule.activation, rule.negative_slope)

    @staticmethod
    def backward(ctx, displacement):
        h, weight, bias, feedback, a = ctx.saved_tensors
        rule: Rule = ctx.rule
        e = ops.lra_error(a, displacement, rule.beta, rule.activation, rule.error,
                          rule.use_fprime, rule.negative_slope, rule.surrogate)
        grad_w, grad_b, grad_feedback = _gradients(ctx, h, e, feedback, rule, bias is not None)
        grad_h = None
        if ctx.needs_input_grad[0]:
            target = None  # only refinement re-evaluates the error: built on first use

            def error_at(moved):
                nonlocal target
                if target is None:
                    target = _target_value(a - rule.beta * displacement, rule)
                a_moved = F.linear(moved, weight, bias)
                return _local_error(_target_value(a_moved, rule), target, rule, a_moved)

            grad_h = _displacement_below(h, e, feedback, rule, error_at)
        return grad_h, grad_w, grad_b, grad_feedback, None


class OutputFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, feedback, rule: Rule, sum_reduction: bool):
        logits = F.linear(h, weight, bias)
        ctx.save_for_backward(h, weight, bias, feedback, logits)
        ctx.rule, ctx.sum_reduction = rule, sum_reduction
        return logits

    @staticmethod
    def backward(ctx, grad_logits):
        h, weight, bias, feedback, logits = ctx.saved_tensors
        rule: Rule = ctx.rule
        rows = grad_logits.reshape(-1, grad_logits.shape[-1]).shape[0]
        # A mean-reduced loss scaled the error by 1/rows: undo it so e = softmax - onehot.
        e = grad_logits if ctx.sum_reduction else grad_logits * rows
        grad_w, grad_b, grad_feedback = _gradients(ctx, h, e, feedback, rule, bias is not None)
        grad_h = None
        if ctx.needs_input_grad[0]:
            onehot = torch.softmax(logits, -1) - e  # the labels, recovered from the error

            def error_at(moved):
                return torch.softmax(F.linear(moved, weight, bias), -1) - onehot

            grad_h = _displacement_below(h, e, feedback, rule, error_at)
        return grad_h, grad_w, grad_b, grad_feedback, None, None
