"""The LRA-E blocks: hidden :class:`LRALinear`, :class:`LRAOutput` and the :class:`LRA` MLP."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ... import functional
from ..._spec import (
    LRA_ERRORS,
    STEP_ACTIVATIONS,
    check_choice,
    check_finite,
    check_positive_int,
    check_surrogate,
)
from ..amp import apply_autocast
from ..mode import backprop_active
from .rule import HiddenFn, OutputFn, Rule

WEIGHT_INITS = ("normal", "xavier", "zero")
LOSS_REDUCTIONS = ("mean", "sum")


def _check_options(beta, gamma, refine_steps, clip_direction, clip_update, weight_init,
                   weight_std, feedback_std):
    check_finite("beta", beta, minimum=0, strict=True)
    check_finite("gamma", gamma, minimum=0)
    check_positive_int("refine_steps", refine_steps)
    for name, value in (("clip_direction", clip_direction), ("clip_update", clip_update)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)
                                      and value > 0):
            raise ValueError(f"{name} must be None or a finite number > 0, got {value!r}")
    check_choice("weight_init", weight_init, WEIGHT_INITS)
    check_finite("weight_std", weight_std, minimum=0)
    check_finite("feedback_std", feedback_std, minimum=0)


def rule_surrogate(activation: str, surrogate: str | None) -> str | None:
    """The surrogate the rule uses: the block's, for a step-like activation only."""
    return surrogate if activation in STEP_ACTIVATIONS else None


class LRABlock(nn.Module):
    """Base of the LRA blocks: W, b, and the error weights E (``feedback``, W's shape; a
    Parameter when ``gamma > 0``, else a buffer)."""

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

    @torch.no_grad()
    def feedback_matrix(self) -> torch.Tensor:
        """E ``[out, in]``, the matrix that carries this block's error units down (``e E``),
        materialised (a copy, as every fastcredit layer's ``feedback_matrix``)."""
        return self.feedback.detach().clone()

    @torch.no_grad()
    def set_feedback_(self, values: torch.Tensor) -> LRABlock:
        """Copy ``values`` (W's shape) into E. Returns the block; ValueError for another
        shape (the contract of every fastcredit layer family: docs/architecture.md)."""
        if values.shape != self.feedback.shape:
            raise ValueError(f"feedback must have the weight's shape "
                             f"{tuple(self.feedback.shape)}, got {tuple(values.shape)}")
        self.feedback.copy_(values)
        return self

    def _rule(self, **hidden) -> Rule:
        return Rule(self.beta, self.gamma, self.refine_steps, self.clip_direction,
                     self.clip_update, **hidden)

    def _check_input(self, h: torch.Tensor) -> None:
        if h.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__}: expected input [..., {self.in_features}], "
                             f"got {tuple(h.shape)}")


class LRALinear(LRABlock):
    """A hidden LRA-E block: ``z = f(h W^T + b)``, trained by the local target rule.

    Args: in_features, out_features; ``activation`` (tanh, sigmoid, relu, relu6, softplus,
    identity, sign, leaky_relu, gelu); ``beta`` (target step, 0.1); ``gamma`` (E's gain: 0 keeps
    E fixed, default 1.0 as the authors' code); ``error`` ("gaussian" or "cauchy");
    ``use_fprime`` (multiply e by f'(a) in the weight update, as LRA v1; sign uses the surrogate
    1{|a| <= 1}); ``surrogate`` ("hardtanh" or None): for an activation whose derivative is zero
    almost everywhere (sign), form the target and error units through s instead of f,
    ``y = s(a - beta d)``, ``e = s(a) - y``, while the forward still outputs f(a); None keeps
    the exact rule, under which a sign unit gets an error only where ``beta |d| > |a|``. Other
    activations ignore it. The surrogate is fastcredit's choice, not a rule verified in the
    LRA papers (docs/methods.md). ``refine_steps``, ``clip_direction``, ``clip_update`` (see the module doc);
    ``weight_init`` ("normal" with ``weight_std`` 0.1 as the authors' code, "xavier", or "zero"
    for null initialisation; biases start at 0); ``feedback_std`` (E ~ N(0, std^2)).
    Shapes: h [..., in] -> z [..., out].
    """

    def __init__(self, in_features: int, out_features: int, activation: str = "tanh", *,
                 beta: float = 0.1, gamma: float = 1.0, bias: bool = True,
                 error: str = "gaussian", use_fprime: bool = False,
                 negative_slope: float = 0.01, surrogate: str | None = "hardtanh",
                 refine_steps: int = 1,
                 clip_direction: float | None = None, clip_update: float | None = None,
                 weight_init: str = "normal", weight_std: float = 0.1,
                 feedback_std: float = 0.1, device=None, dtype=None):
        functional.check_activation(activation)
        check_choice("error", error, LRA_ERRORS)
        check_surrogate(surrogate)
        super().__init__(in_features, out_features, bias, beta, gamma, refine_steps,
                         clip_direction, clip_update, weight_init, weight_std, feedback_std,
                         device, dtype)
        self.activation, self.error = activation, error
        self.use_fprime, self.negative_slope = bool(use_fprime), float(negative_slope)
        self.surrogate = surrogate

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self._check_input(h)
        if backprop_active():
            return functional.activation(F.linear(h, self.weight, self.bias),
                                         self.activation, self.negative_slope)
        rule = self._rule(activation=self.activation, error=self.error,
                          use_fprime=self.use_fprime, negative_slope=self.negative_slope,
                          surrogate=rule_surrogate(self.activation, self.surrogate))
        return apply_autocast(HiddenFn, (h, self.weight, self.bias, self.feedback), rule)

    def extra_repr(self) -> str:
        surrogate = (f", surrogate={self.surrogate!r}"
                     if self.activation in STEP_ACTIVATIONS else "")
        return (f"{self.in_features}, {self.out_features}, activation={self.activation!r}, "
                f"beta={self.beta}, gamma={self.gamma}, error={self.error!r}{surrogate}")


class LRAOutput(LRABlock):
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
        check_choice("loss_reduction", loss_reduction, LOSS_REDUCTIONS)
        super().__init__(in_features, num_classes, bias, beta, gamma, refine_steps,
                         clip_direction, clip_update, weight_init, weight_std, feedback_std,
                         device, dtype)
        self.loss_reduction = loss_reduction

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self._check_input(h)
        if backprop_active():
            return F.linear(h, self.weight, self.bias)
        return apply_autocast(OutputFn, (h, self.weight, self.bias, self.feedback), self._rule(),
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
