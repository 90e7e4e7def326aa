"""LRA-E's learning rule as autograd Functions: what a hidden or output block's backward does
with the displacement (or error) arriving from above. See :mod:`fastcredit.nn.lra`.

Loss scaling: the rule is not linear in the error (targets ``f(a - beta d)``, clipping), yet
``GradScaler`` or ``loss / k`` must scale every gradient by the same factor S. The output
block recovers S from its incoming gradient (``S (softmax - onehot)``), runs the rule on the
unscaled error and multiplies what it returns by S (through ``S e`` where the rule is linear); it hands S to the LRA blocks below it
(their autograd nodes, found through the graph), which run the rule on ``d / S`` and scale
their results by S too. A hidden block that no LRA output block feeds takes S = 1."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ... import functional, ops

_SEARCH_LIMIT = 256  # autograd nodes walked to find the LRA blocks below one block


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


def _displacement_below(h, e, es, feedback, rule: Rule, error_at, scale):
    """What the block sends down in place of dL/dh, times the loss scale S: ``(S e) E``
    (K = 1, no clipping), or the refined move of its input divided by beta, times S.
    ``error_at(h_moved)`` re-runs the block."""
    if rule.refine_steps == 1 and rule.clip_direction is None:
        return es @ feedback
    moved = h
    for step in range(rule.refine_steps):
        error = e if step == 0 else error_at(moved)
        moved = moved - rule.beta * _clip_norm(error @ feedback, rule.clip_direction)
    return (h - moved) * (scale.to(h.dtype) / rule.beta)


def _gradients(ctx, h, e, feedback, rule: Rule, has_bias: bool, scale: torch.Tensor):
    """W, b, E gradients of the LRA rule from the unscaled error units e [..., out] and the
    input h [..., in], times the loss scale S; and ``S e``. S multiplies e before the GEMM
    (one pass over e instead of one over each weight-sized gradient), except under
    ``clip_update``, which clips the unscaled update before S multiplies it."""
    es = e * scale.to(e.dtype)
    clip = rule.clip_update is not None
    e2, h2 = (e if clip else es).reshape(-1, e.shape[-1]), h.reshape(-1, h.shape[-1])
    n = max(e2.shape[0], 1)  # an empty batch has all-zero sums: zero gradients, not 0/0
    # 1/N applied inside the GEMM (alpha; beta = 0 ignores the input): no extra pass over W
    unused = e2.new_zeros(()).expand(e2.shape[1], h2.shape[1])
    grad_w = torch.addmm(unused, e2.T, h2, beta=0, alpha=1 / n)
    grad_b = e2.sum(0) / n if has_bias else None
    if clip:
        grad_w, grad_b = scaled((_clip_norm(grad_w, rule.clip_update), grad_b), scale)
    grad_feedback = rule.gamma * grad_w if ctx.needs_input_grad[3] else None
    return grad_w, grad_b, grad_feedback, es


def scaled(grads, scale: torch.Tensor):
    """Each of ``grads`` (None kept) times the loss scale S."""
    return tuple(None if g is None else g * scale.to(g.dtype) for g in grads)


def unscaled(ctx, displacement: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, d / S) for a hidden block's node: S is the loss scale the LRA block above handed to
    it (1 where none did), handed on to the blocks below."""
    scale = getattr(ctx, "loss_scale", None)
    if scale is None:
        scale = displacement.new_ones(())
    hand_down(ctx, scale)
    return scale, displacement / scale.to(displacement.dtype)


def _hand_down(ctx, scale: torch.Tensor) -> None:
    """Give the loss scale to the nearest LRA hidden blocks (Functions marked
    ``lra_hidden``: linear and conv) below this node, through any non-LRA nodes between them
    (a dropout, a reshape, a pooling)."""
    stack = [node for node, _ in ctx.next_functions if node is not None]
    seen = {}
    while stack and len(seen) < _SEARCH_LIMIT:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node  # kept alive so that ids stay unique during the walk
        if getattr(getattr(node, "_forward_cls", None), "lra_hidden", False):
            node.loss_scale = scale
            continue
        stack.extend(n for n, _ in node.next_functions if n is not None)


# The walk needs the real autograd graph: under Dynamo it runs eagerly. (Eager calls skip
# the disable wrapper, which costs microseconds per call.)
_hand_down_eagerly = torch.compiler.disable(_hand_down)


def hand_down(ctx, scale: torch.Tensor) -> None:
    (_hand_down_eagerly if torch.compiler.is_compiling() else _hand_down)(ctx, scale)


class HiddenFn(torch.autograd.Function):
    lra_hidden = True  # takes the loss scale from the block above (_hand_down)

    @staticmethod
    def forward(ctx, h, weight, bias, feedback, rule: Rule):
        a = F.linear(h, weight, bias)
        ctx.save_for_backward(h, weight, bias, feedback, a)
        ctx.rule = rule
        return functional.activation(a, rule.activation, rule.negative_slope)

    @staticmethod
    @once_differentiable  # a learning rule, not a derivative: no second order
    def backward(ctx, displacement):
        h, weight, bias, feedback, a = ctx.saved_tensors
        rule: Rule = ctx.rule
        scale, displacement = unscaled(ctx, displacement)
        e = ops.lra_error(a, displacement, rule.beta, rule.activation, rule.error,
                          rule.use_fprime, rule.negative_slope, rule.surrogate)
        grad_w, grad_b, grad_feedback, es = _gradients(ctx, h, e, feedback, rule,
                                                       bias is not None, scale)
        grad_h = None
        if ctx.needs_input_grad[0]:
            target = None  # only refinement re-evaluates the error: built on first use

            def error_at(moved):
                nonlocal target
                if target is None:
                    target = _target_value(a - rule.beta * displacement, rule)
                a_moved = F.linear(moved, weight, bias)
                return _local_error(_target_value(a_moved, rule), target, rule, a_moved)

            grad_h = _displacement_below(h, e, es, feedback, rule, error_at, scale)
        return grad_h, grad_w, grad_b, grad_feedback, None


class OutputFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, feedback, rule: Rule, sum_reduction: bool):
        logits = F.linear(h, weight, bias)
        ctx.save_for_backward(h, weight, bias, feedback, logits)
        ctx.rule, ctx.sum_reduction = rule, sum_reduction
        return logits

    @staticmethod
    @once_differentiable  # a learning rule, not a derivative: no second order
    def backward(ctx, grad_logits):
        h, weight, bias, feedback, logits = ctx.saved_tensors
        rule: Rule = ctx.rule
        rows = grad_logits.reshape(-1, grad_logits.shape[-1]).shape[0]
        # A mean-reduced loss scaled the error by 1/rows: undo it so e = S (softmax - onehot),
        # S the loss scale, then divide S out.
        e = grad_logits if ctx.sum_reduction else grad_logits * rows
        e_rows, logit_rows = e.reshape(-1, e.shape[-1]), logits.reshape(-1, e.shape[-1])
        scale = functional.softmax_error_scale(e_rows, logit_rows, e_rows.argmin(-1))
        scale = torch.where(scale != 0, scale, torch.ones_like(scale))  # e = 0: nothing to undo
        hand_down(ctx, scale)
        e = e / scale
        grad_w, grad_b, grad_feedback, es = _gradients(ctx, h, e, feedback, rule,
                                                       bias is not None, scale)
        grad_h = None
        if ctx.needs_input_grad[0]:
            onehot = torch.softmax(logits, -1) - e  # the labels, recovered from the error

            def error_at(moved):
                return torch.softmax(F.linear(moved, weight, bias), -1) - onehot

            grad_h = _displacement_below(h, e, es, feedback, rule, error_at, scale)
        return grad_h, grad_w, grad_b, grad_feedback, None, None
