"""DFA's norm fold: a pre-norm block after a point computes no input gradient it discards.

A DFA point returns its input detached, so the block after it computes no gradient for its
input. In a pre-norm block (GPT-2, ViT: ``x -> LayerNorm -> Linear``) autograd still
computes the Linear's input gradient ``dz W``, only to train the norm's affine ``gamma`` and
``beta``; the norm's own input gradient is skipped. The fold gets those gradients from the
norm's normalised input ``xh`` instead:

    z = (xh * gamma + beta) W^T + b,   M = dz^T xh,   s = sum of dz over rows
    dW = M diag(gamma) + s beta^T,   db = s,   dgamma = diag(W^T M),   dbeta = W^T s

``M`` costs what backprop's ``dW = dz^T y`` costs, so the product ``dz W`` (as large as the
weight gradient) is saved. Same rule, same forward values: the layer's own forward computes
``z`` from the norm's output. It applies where the norm's input carries no gradient and the
norm's output goes straight into a Linear (or transformers' Conv1D); elsewhere (the first
block, autocast, compiled code) the layers run as they are.

Mechanism: a forward hook on each norm (run before any other of its hooks) records its
input and its own output (the graph node of the norm's parameters), with their versions, on
a slot the model shares. The weight layers of the same blocks get a subclass of their own
class (same name, attributes, hooks and state-dict keys) whose forward folds when its input
*is* the recorded output, unmodified since, with no hook on it (the alignment diagnostics',
torch's FlopCounterMode's module tracker) and no retained gradient: those wait for that
output's gradient. Anything else (another consumer of the output, a hook that replaced it,
a norm subclass, a forward wrapper set on the instance) runs the layers as they are, and
another consumer's gradient still reaches gamma and beta through the norm's own backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .fa import is_transformers_conv1d

_SLOT = "_dfa_fold"


class Slot:
    """The norm output most recently recorded in a converted model: ``record`` is (output,
    its version, input, its version, norm), one tuple so that a reader sees one record
    whole; None once the output op has run. Copies and pickles start empty (the record holds
    non-leaf tensors of a forward in flight)."""

    def __init__(self) -> None:
        self.record: tuple | None = None

    def clear(self) -> None:
        self.record = None

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.record = None


def foldable_norm(module: nn.Module) -> bool:
    """A LayerNorm or RMSNorm (exactly: a subclass may compute something else) over the last
    dim, with a gamma (and beta, if any) to fold."""
    return (type(module) in (nn.LayerNorm, nn.RMSNorm) and len(module.normalized_shape) == 1
            and module.weight is not None)


def folding_layer(module: nn.Module) -> bool:
    """A layer whose product the fold replaces: nn.Linear or transformers' Conv1D."""
    return type(module) is nn.Linear or is_transformers_conv1d(module)


def _normalised(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(norm, nn.LayerNorm):
        return F.layer_norm(x, norm.normalized_shape, None, None, norm.eps)
    return F.rms_norm(x, norm.normalized_shape, None, norm.eps)


def _plain_forward(layer: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The forward of the layer's own class."""
    return getattr(type(layer), "_fold_base", type(layer)).forward(layer, y)


class _FoldedProduct(torch.autograd.Function):
    """``layer(y)`` computed by the layer's own forward; in backward the layer's and the
    norm's parameter gradients from ``xh`` (module docstring), and none for ``y``."""

    @staticmethod
    def forward(ctx, layer, norm, y, x, weight, bias, gamma, beta):
        ctx.norm, ctx.transposed = norm, not isinstance(layer, nn.Linear)  # Conv1D: [in, out]
        ctx.save_for_backward(x, weight, gamma, beta)
        return _plain_forward(layer, y)

    @staticmethod
    @once_differentiable  # a rule's gradients, as DFA's output op: no second order
    def backward(ctx, dz):
        x, weight, gamma, beta = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_w = grad_b = grad_gamma = grad_beta = None
        with torch.autocast(x.device.type, enabled=False):  # a backward called under autocast
            d = dz.reshape(-1, dz.shape[-1])
            xh = _normalised(ctx.norm, x).reshape(-1, x.shape[-1])
            s = d.sum(0)
            if ctx.transposed:  # weight [in, out]: M^T = xh^T dz, computed in that layout
                m = xh.t() @ d
                if needs[4]:
                    grad_w = m * gamma[:, None]
                    grad_w = grad_w if beta is None else grad_w.addr_(beta, s)
                if needs[6]:
                    grad_gamma = (m * weight).sum(1)
                if needs[7]:
                    grad_beta = weight @ s
            else:  # weight [out, in]
                m = d.t() @ xh
                if needs[4]:
                    grad_w = m * gamma
                    grad_w = grad_w if beta is None else grad_w.addr_(s, beta)
                if needs[6]:
                    grad_gamma = (m * weight).sum(0)
                if needs[7]:
                    grad_beta = s @ weight
        if needs[5]:
            grad_b = s
        return None, None, None, None, grad_w, grad_b, grad_gamma, grad_beta


def _record(norm: nn.Module, inputs, output):
    """Forward hook of a norm: record its input and output where the fold applies."""
    x = inputs[0]
    if (torch.is_grad_enabled() and output.requires_grad and not x.requires_grad
            and not torch.is_autocast_enabled(x.device.type)
            and not torch.compiler.is_compiling() and _own_output(norm, output)):
        norm.__dict__[_SLOT].record = (output, output._version, x, x._version, norm)


def _own_output(norm: nn.Module, output: torch.Tensor) -> bool:
    """Whether ``output`` is the norm's own result, not one a wrapper or a global hook made
    of it: its graph node takes the norm's parameters and nothing else."""
    nodes = [node for node, _ in output.grad_fn.next_functions if node is not None]
    return bool(nodes) and all(any(getattr(node, "variable", None) is p
                                   for p in norm.parameters()) for node in nodes)


def _forward(layer: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The weight layer's forward: folded when ``y`` is the recorded norm output."""
    slot = layer.__dict__.get(_SLOT)  # None after unconvert (a wrapper may still call this)
    record = None if slot is None else slot.record
    if (record is None or y is not record[0] or torch.compiler.is_compiling()
            or not _foldable(layer, record)):
        return _plain_forward(layer, y)
    _, _, x, _, norm = record
    return _FoldedProduct.apply(layer, norm, y.detach(), x, layer.weight, layer.bias,
                                norm.weight, getattr(norm, "bias", None))


def _foldable(layer: nn.Module, record: tuple) -> bool:
    """Whether the recorded output may skip its own backward: unmodified (it and the norm's
    input), no hook or retained gradient on it, and nothing that changes the arithmetic."""
    y, y_version, x, x_version, norm = record
    weight = layer.weight
    return (y._version == y_version and x._version == x_version and not y._backward_hooks
            and not y.retains_grad and isinstance(weight, nn.Parameter)
            and y.dtype == weight.dtype == norm.weight.dtype and torch.is_grad_enabled()
            and not torch.is_autocast_enabled(y.device.type))


class _Folding:
    """Put before a Linear's or Conv1D's class while it is converted: its forward folds."""

    _fold_base: type

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return _forward(self, y)

    def __reduce_ex__(self, protocol):
        # copies and pickles rebuild the class from its base, which pickle can name
        reduced = super().__reduce_ex__(protocol)
        return (_new_folding, (self._fold_base,), *reduced[2:])


_FOLDING: dict[type, type] = {}


def _folding_class(base: type) -> type:
    if base not in _FOLDING:
        _FOLDING[base] = type(base.__name__, (_Folding, base),
                              {"_fold_base": base, "__qualname__": f"_Folding{base.__name__}"})
    return _FOLDING[base]


def _new_folding(base: type) -> nn.Module:
    cls = _folding_class(base)
    return cls.__new__(cls)


def attach_fold(modules: list[nn.Module]) -> Slot | None:
    """Give the foldable norms among ``modules`` the recording hook and the folding layers
    among them the folding class, all sharing one new slot; None where there is no pair."""
    norms = [m for m in modules if foldable_norm(m)]
    layers = [m for m in modules if folding_layer(m)]
    if not norms or not layers:
        return None
    slot = Slot()
    for norm in norms:
        norm.__dict__[_SLOT] = slot
        norm.register_forward_hook(_record, prepend=True)
    for layer in layers:
        layer.__dict__[_SLOT] = slot
        layer.__class__ = _folding_class(type(layer))
    return slot


def remove_fold(module: nn.Module, remove_hooks) -> None:
    """Undo :func:`attach_fold` on ``module`` (``remove_hooks(module, function)`` removes hooks)."""
    if module.__dict__.pop(_SLOT, None) is None:
        return
    remove_hooks(module, _record)
    if type(module) is _FOLDING.get(getattr(module, "_fold_base", None)):
        module.__class__ = module._fold_base
