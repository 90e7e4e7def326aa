"""Local Representation Alignment (LRA-E, Ororbia & Mali 2019) as drop-in layers.

The backward of each block is LRA's rule, so a plain ``loss.backward()`` trains the network:

* the output block turns the incoming gradient into the unnormalised error
  ``e_L = softmax - onehot`` (it multiplies by the batch size when the loss is a mean),
* a hidden block receives the displacement ``d = e_{l+1} E_{l+1}`` from above in place of a
  gradient, forms the target ``y = f(a - beta d)`` and error units ``e = f(a) - y``
  (or the Cauchy form), and
* every block sets ``W.grad = e^T h_prev / N`` (no f' unless ``use_fprime``), ``b.grad =
  sum(e) / N`` and sends ``e E`` down, E being its error-weight matrix (W's shape).

With ``gamma > 0`` E is a Parameter whose gradient is ``gamma * W.grad`` (the authors feed
``gamma * dW`` to the optimiser), so E tracks W; with ``gamma = 0`` E is a fixed buffer.
Options of the original LRA (arXiv 1803.01834): ``refine_steps`` K > 1 moves the input of a
block K times along its error pathway (``h <- h - beta clip(e(h) E)``, e re-evaluated by re-running
the block on the moved input) and sends the total move divided by beta as the displacement;
``clip_direction`` bounds each move's Frobenius norm and ``clip_update`` that of ``W.grad``.
K = 1 without clipping is exactly LRA-E.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops, reference
from .amp import apply_autocast
from .mode import backprop_active

LRA_ACTIVATIONS = ("tanh", "sigmoid", "relu", "relu6", "softplus", "identity", "sign",
                   "leaky_relu", "gelu")
ERRORS = ("gaussian", "cauchy")
WEIGHT_INITS = ("normal", "xavier", "zero")
LOSS_REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class _Rule:
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


def _clip_norm(t: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    if max_norm is None:
        return t
    norm = torch.linalg.vector_norm(t)
    return t * (max_norm / norm) if norm > max_norm else t


def _local_error(z: torch.Tensor, target: torch.Tensor, rule: _Rule, a: torch.Tensor):
    diff = z - target
    e = diff if rule.error == "gaussian" else 2 * diff / (1 + diff * diff)
    if rule.use_fprime:
        e = e * reference.activation_grad(a, rule.activation, rule.negative_slope)
    return e


def _displacement_below(h, e, weight, bias, feedback, rule: _Rule, error_at):
    """What the block sends down in place of dL/dh: ``e E`` (K = 1, no clipping), or the
    refined move of its input divided by beta. ``error_at(h_moved)`` re-runs the block."""
    if rule.refine_steps == 1 and rule.clip_direction is None:
        return e @ feedback
    moved = h
    for step in range(rule.refine_steps):
        error = e if step == 0 else error_at(moved)
        moved = moved - rule.beta * _clip_norm(error @ feedback, rule.clip_direction)
    return (h - moved) / rule.beta


def _gradients(ctx, h, e, feedback, rule: _Rule, has_bias: bool):
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


class _HiddenFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, feedback, rule: _Rule):
        a = F.linear(h, weight, bias)
        ctx.save_for_backward(h, weight, bias, feedback, a)
        ctx.rule = rule
        return reference.activation_value(a, rule.activation, rule.negative_slope)

    @staticmethod
    def backward(ctx, displacement):
        h, weight, bias, feedback, a = ctx.saved_tensors
        rule: _Rule = ctx.rule
        e = ops.lra_error(a, displacement, rule.beta, rule.activation, rule.error,
                          rule.use_fprime, rule.negative_slope)
        grad_w, grad_b, grad_feedback = _gradients(ctx, h, e, feedback, rule, bias is not None)
        grad_h = None
        if ctx.needs_input_grad[0]:
            target = None  # only refinement re-evaluates the error: built on first use

            def error_at(moved):
                nonlocal target
                if target is None:
                    target = reference.activation_value(a - rule.beta * displacement,
                                                        rule.activation, rule.negative_slope)
                a_moved = F.linear(moved, weight, bias)
                z_moved = reference.activation_value(a_moved, rule.activation,
                                                     rule.negative_slope)
                return _local_error(z_moved, target, rule, a_moved)

            grad_h = _displacement_below(h, e, weight, bias, feedback, rule, error_at)
        return grad_h, grad_w, grad_b, grad_feedback, None


class _OutputFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, feedback, rule: _Rule, sum_reduction: bool):
        logits = F.linear(h, weight, bias)
        ctx.save_for_backward(h, weight, bias, feedback, logits)
        ctx.rule, ctx.sum_reduction = rule, sum_reduction
        return logits

    @staticmethod
    def backward(ctx, grad_logits):
        h, weight, bias, feedback, logits = ctx.saved_tensors
        rule: _Rule = ctx.rule
        rows = grad_logits.reshape(-1, grad_logits.shape[-1]).shape[0]
        # A mean-reduced loss scaled the error by 1/rows: undo it so e = softmax - onehot.
        e = grad_logits if ctx.sum_reduction else grad_logits * rows
        grad_w, grad_b, grad_feedback = _gradients(ctx, h, e, feedback, rule, bias is not None)
        grad_h = None
        if ctx.needs_input_grad[0]:
            onehot = torch.softmax(logits, -1) - e  # the labels, recovered from the error

            def error_at(moved):
                return torch.softmax(F.linear(moved, weight, bias), -1) - onehot

            grad_h = _displacement_below(h, e, weight, bias, feedback, rule, error_at)
        return grad_h, grad_w, grad_b, grad_feedback, None, None


def _check_options(beta, gamma, refine_steps, clip_direction, clip_update, weight_init,
                   weight_std, feedback_std):
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    if isinstance(refine_steps, bool) or not isinstance(refine_steps, int) or refine_steps < 1:
        raise ValueError(f"refine_steps must be an int >= 1, got {refine_steps!r}")
    for name, value in (("clip_direction", clip_direction), ("clip_update", clip_update)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be None or a finite number > 0, got {value!r}")
    if weight_init not in WEIGHT_INITS:
        raise ValueError(f"unknown weight_init {weight_init!r}; expected one of {WEIGHT_INITS}")
    for name, value in (("weight_std", weight_std), ("feedback_std", feedback_std)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


class _LRABlock(nn.Module):
    """Shared parameters and state of the LRA blocks: W, b, and the error weights E."""

    def __init__(self, in_features, out_features, bias, beta, gamma, refine_steps,
                 clip_direction, clip_update, weight_init, weight_std, feedback_std,
                 device, dtype):
        super().__init__()
        _check_options(beta, gamma, refine_steps, clip_direction, clip_update, weight_init,
                       weight_std, feedback_std)
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        feedback = torch.empty(out_features, in_features, **factory)
        if gamma > 0:  # E learns: it receives gamma * dW through the optimiser
            self.feedback = nn.Parameter(feedback)
        else:
            self.register_buffer("feedback", feedback)
        self.weight_init, self.weight_std, self.feedback_std = weight_init, weight_std, feedback_std
        self.beta, self.gamma, self.refine_steps = float(beta), float(gamma), refine_steps
        self.clip_direction, self.clip_update = clip_direction, clip_update
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.weight_init == "zero":  # null initialisation
                self.weight.zero_()
            elif self.weight_init == "xavier":
                nn.init.xavier_uniform_(self.weight)
            else:
                self.weight.normal_(0.0, self.weight_std)
            if self.bias is not None:
                self.bias.zero_()
            self.feedback.normal_(0.0, self.feedback_std)

    def feedback_matrix(self) -> torch.Tensor:
        """E [out, in]: the matrix that carries this block's error units down (``e E``)."""
        return self.feedback.detach()

    def _rule(self, **hidden) -> _Rule:
        return _Rule(self.beta, self.gamma, self.refine_steps, self.clip_direction,
                     self.clip_update, **hidden)

    def _check_input(self, h: torch.Tensor) -> None:
        if h.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__}: expected input [..., {self.in_features}], "
                             f"got {tuple(h.shape)}")


class LRALinear(_LRABlock):
    """A hidden LRA-E block: ``z = f(h W^T + b)``, trained by the local target rule.

    Args: in_features, out_features; ``activation`` (tanh, sigmoid, relu, relu6, softplus,
    identity, sign, leaky_relu, gelu); ``beta`` (target step, 0.1); ``gamma`` (E's gain: 0 keeps
    E fixed, default 1.0 as the authors' code); ``error`` ("gaussian" or "cauchy");
    ``use_fprime`` (multiply e by f'(a) in the weight update, as LRA v1; sign uses the surrogate
    1{|a| <= 1}); ``refine_steps``, ``clip_direction``, ``clip_update`` (see the module doc);
    ``weight_init`` ("normal" with ``weight_std`` 0.1 as the authors' code, "xavier", or "zero"
    for null initialisation; biases start at 0); ``feedback_std`` (E ~ N(0, std^2)).
    Shapes: h [..., in] -> z [..., out].
    """

    def __init__(self, in_features: int, out_features: int, activation: str = "tanh", *,
                 beta: float = 0.1, gamma: float = 1.0, bias: bool = True,
                 error: str = "gaussian", use_fprime: bool = False,
                 negative_slope: float = 0.01, refine_steps: int = 1,
                 clip_direction: float | None = None, clip_update: float | None = None,
                 weight_init: str = "normal", weight_std: float = 0.1,
                 feedback_std: float = 0.1, device=None, dtype=None):
        if activation not in LRA_ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of "
                             f"{LRA_ACTIVATIONS}")
        if error not in ERRORS:
            raise ValueError(f"unknown error {error!r}; expected one of {ERRORS}")
        super().__init__(in_features, out_features, bias, beta, gamma, refine_steps,
                         clip_direction, clip_update, weight_init, weight_std, feedback_std,
                         device, dtype)
        self.activation, self.error = activation, error
        self.use_fprime, self.negative_slope = bool(use_fprime), float(negative_slope)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self._check_input(h)
        if backprop_active():
            return reference.activation_value(F.linear(h, self.weight, self.bias),
                                              self.activation, self.negative_slope)
        rule = self._rule(activation=self.activation, error=self.error,
                          use_fprime=self.use_fprime, negative_slope=self.negative_slope)
        return apply_autocast(_HiddenFn, (h, self.weight, self.bias, self.feedback), rule)

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, activation={self.activation!r}, "
                f"beta={self.beta}, gamma={self.gamma}, error={self.error!r}")


class LRAOutput(_LRABlock):
    """The LRA output block: logits ``h W^T + b`` for a softmax cross-entropy loss.

    Its error is the unnormalised ``e = softmax - onehot``, recovered from the incoming
    gradient: ``loss_reduction="mean"`` (F.cross_entropy's default) multiplies that gradient by
    the number of rows, "sum" takes it as is. W.grad is ``e^T h / N``, so with a mean
    cross-entropy it is exactly the true gradient; ``e E`` goes down to the last hidden block.
    Other arguments as :class:`LRALinear`. Shapes: h [..., in] -> logits [..., classes].
    """

    def __init__(self, in_features: int, num_classes: int, *, beta: float = 0.1,
                 gamma: float = 1.0, bias: bool = True, loss_reduction: str = "mean",
                 refine_steps: int = 1, clip_direction: float | None = None,
                 clip_update: float | None = None, weight_init: str = "normal",
                 weight_std: float = 0.1, feedback_std: float = 0.1, device=None, dtype=None):
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"unknown loss_reduction {loss_reduction!r}; expected one of "
                             f"{LOSS_REDUCTIONS}")
        super().__init__(in_features, num_classes, bias, beta, gamma, refine_steps,
                         clip_direction, clip_update, weight_init, weight_std, feedback_std,
                         device, dtype)
        self.loss_reduction = loss_reduction

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self._check_input(h)
        if backprop_active():
            return F.linear(h, self.weight, self.bias)
        return apply_autocast(_OutputFn, (h, self.weight, self.bias, self.feedback), self._rule(),
                              self.loss_reduction == "sum")

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, beta={self.beta}, "
                f"gamma={self.gamma}, loss_reduction={self.loss_reduction!r}")


class LRA(nn.Sequential):
    """An LRA-E multilayer perceptron: ``LRA([784, 256, 256, 10])`` is two hidden
    :class:`LRALinear` blocks and an :class:`LRAOutput`. Inputs [N, ...] are flattened.

    ``output_options`` go to the output block only; every other keyword goes to all blocks
    where it applies (hidden-only options such as ``activation`` skip the output block).
    """

    _OUTPUT_KEYS = {"beta", "gamma", "bias", "refine_steps", "clip_direction", "clip_update",
                    "weight_init", "weight_std", "feedback_std", "device", "dtype"}

    def __init__(self, widths: Sequence[int], activation: str = "tanh", *,
                 output_options: dict | None = None, **options):
        if len(widths) < 2:
            raise ValueError(f"widths needs an input and an output size, got {list(widths)}")
        hidden = [LRALinear(i, o, activation, **options) for i, o in zip(widths[:-2], widths[1:-1])]
        shared = {k: v for k, v in options.items() if k in self._OUTPUT_KEYS}
        output = LRAOutput(widths[-2], widths[-1], **{**shared, **(output_options or {})})
        super().__init__(nn.Flatten(), *hidden, output)

    def __getitem__(self, idx):
        # Sequential builds slices with self.__class__, whose constructor takes widths.
        if isinstance(idx, slice):
            return nn.Sequential(*list(self._modules.values())[idx])
        return super().__getitem__(idx)
