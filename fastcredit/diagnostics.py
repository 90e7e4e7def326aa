"""How closely a method's learning signals follow backpropagation, layer by layer.

Definitions (Lillicrap et al. 2016; the per-sample form as Launay et al. 2019), for every
module that owns a ``weight`` parameter:

* signal alignment: per-sample cosine between the gradient the method delivers to the module's
  output and the true backprop gradient at the same tensor (mean and std over the batch; for
  DFA this is e B at the block, for LRA the error pathway's signal);
* update alignment: cosine between the method's ``weight.grad`` and backprop's;
* weight alignment: angle between W and the layer's effective feedback matrix, and the norm
  ratio ``|B| / |W|``, where the layer exposes a ``feedback_matrix()`` of W's size (for LRA
  blocks, E: the E–W angle);
* delta alignment, for LRA blocks (§9.5): per-sample cosine between the error units ``e`` that
  LRA uses as the layer's delta (its update is ``eᵀ h``) and backprop's delta ``∂L/∂a`` at the
  pre-activation a (mean and std over the batch). For a hidden block ``e = f(a) − f(a − β d)``
  (or its Cauchy form) with d the displacement that arrives; for the output block
  ``e = softmax − onehot``, parallel to backprop's delta sample by sample.

Backprop is computed on the same model and parameters under :func:`fastcredit.nn.backprop`, with
the random state replayed so dropout masks match. The measurement has no side effect:
parameters, ``.grad``, every buffer (BatchNorm's running statistics and
``num_batches_tracked``, brSF's draw counter, DFA geometry) and the global random state
(CPU, and the probe's CUDA device) are as they were before the call.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import functional, ops
from .nn.lra import LRALinear, LRAOutput
from .nn.lra.blocks import rule_surrogate
from .nn.mode import backprop

EPS = 1e-30  # guards 0 / 0 only: signals can be tiny (LRA errors scale like beta^depth)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return (a @ b / (a.norm() * b.norm() + EPS)).item()


def _angle(cosine: float) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def _trainable_weight(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, nn.Parameter) and weight.requires_grad


def _weighted_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: module for name, module in model.named_modules() if _trainable_weight(module)}


def _signals_and_updates(model, modules, x, y, loss_fn, seed, inputs=None):
    """Gradients at each module's output and of each module's weight, for one pass; the
    input of each module goes to ``inputs`` when given."""
    signals: dict[str, torch.Tensor] = {}

    def capture(name):
        def hook(_module, module_inputs, output):
            if inputs is not None and module_inputs:
                inputs[name] = module_inputs[0].detach()
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(lambda grad: signals.__setitem__(name, grad.detach()))
        return hook

    # prepend: see the module's own output, before convert()'s DFA hooks hand on a detached one
    handles = [m.register_forward_hook(capture(n), prepend=True) for n, m in modules.items()]
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            loss = loss_fn(model(x), y)
        owners = [n for n, m in modules.items() if _trainable_weight(m)]
        weights = [modules[n].weight for n in owners]
        # Every trainable parameter is an input so that the backward reaches each measured
        # module's output, also when the measured modules own no weight (activations).
        ids = {id(w) for w in weights}
        others = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        grads = torch.autograd.grad(loss, weights + others, allow_unused=True)[:len(owners)]
    finally:
        for handle in handles:
            handle.remove()
    return signals, dict(zip(owners, grads))


@contextlib.contextmanager
def _unchanged(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Restores ``model``'s buffers (values, and which tensor or None each slot holds), the
    parameters' ``.grad`` and the random state after the block."""
    buffers = [(m._buffers, name, t, None if t is None else t.detach().clone())
               for m in model.modules() for name, t in m._buffers.items()]
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        with torch.no_grad():
            for slots, name, tensor, value in buffers:
                slots[name] = tensor
                if tensor is not None and not torch.equal(tensor, value):
                    tensor.copy_(value)
            for parameter, grad in grads:
                parameter.grad = grad


def alignment(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    seed: int = 0,
    modules: Iterable[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Per-layer alignment of ``model``'s method with backprop on the probe batch ``(x, y)``.

    Returns ``{module_name: {"signal_cosine", "signal_cosine_std", "signal_angle",
    "update_cosine", "update_angle", "weight_angle", "norm_ratio", "delta_cosine",
    "delta_cosine_std", "delta_angle"}}``; a metric that does not apply to a layer (no
    feedback matrix of W's size, no gradient, delta metrics outside LRA blocks) is ``nan``.
    ``modules`` names the modules to measure at (default: every module with a trainable
    weight); e.g. activation modules give Launay's signal alignment after the non-linearity.
    """
    named = dict(model.named_modules())
    if modules is None:
        modules = _weighted_modules(model)
    else:
        unknown = [name for name in modules if name not in named]
        if unknown:
            raise ValueError(f"modules: no module named {unknown} in the model")
        modules = {name: named[name] for name in modules}
    if not modules:
        raise ValueError("alignment: the model has no module with a trainable weight")
    if len(x) == 0:
        raise ValueError(f"alignment: the probe batch is empty (x of shape {tuple(x.shape)}); "
                         "cosines need at least one sample")
    inputs: dict[str, torch.Tensor] = {}
    with _unchanged(model, x.device):
        method_signals, method_updates = _signals_and_updates(model, modules, x, y, loss_fn,
                                                              seed, inputs)
        with backprop():
            bp_signals, bp_updates = _signals_and_updates(model, modules, x, y, loss_fn, seed)
    report = {}
    for name, module in modules.items():
        row = dict.fromkeys(("signal_cosine", "signal_cosine_std", "signal_angle",
                             "update_cosine", "update_angle", "weight_angle", "norm_ratio",
                             "delta_cosine", "delta_cosine_std", "delta_angle"), math.nan)
        if name in method_signals and name in bp_signals:
            _per_sample_alignment(row, "signal", method_signals[name], bp_signals[name])
            if isinstance(module, (LRALinear, LRAOutput)) and name in inputs:
                lra_delta, bp_delta = _lra_deltas(module, inputs[name], method_signals[name],
                                                  bp_signals[name])
                _per_sample_alignment(row, "delta", lra_delta, bp_delta)
        if method_updates.get(name) is not None and bp_updates.get(name) is not None:
            row["update_cosine"] = _cosine(method_updates[name], bp_updates[name])
            row["update_angle"] = _angle(row["update_cosine"])
        feedback = module.feedback_matrix() if hasattr(module, "feedback_matrix") else None
        if (isinstance(feedback, torch.Tensor) and _trainable_weight(module)
                and feedback.numel() == module.weight.numel()):
            weight = module.weight.detach()
            row["weight_angle"] = _angle(_cosine(weight, feedback))
            row["norm_ratio"] = (feedback.norm() / (weight.norm() + EPS)).item()
        report[name] = row
    return report


def _per_sample_alignment(row: dict, prefix: str, method: torch.Tensor, bp: torch.Tensor) -> None:
    a, b = method.flatten(1).double(), bp.flatten(1).double()
    per_sample = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)
    row[f"{prefix}_cosine"] = per_sample.mean().item()
    row[f"{prefix}_cosine_std"] = per_sample.std().item() if len(per_sample) > 1 else 0.0
    row[f"{prefix}_angle"] = _angle(row[f"{prefix}_cosine"])


@torch.no_grad()
def _lra_deltas(module, h, method_signal, bp_signal):
    """(LRA's error units e, backprop's delta dL/da) of an LRA block from its input h and the
    signals at its output (the displacement d under LRA, dL/dz under backprop)."""
    if isinstance(module, LRAOutput):  # the output is a itself; e is a multiple of dL/da
        return method_signal, bp_signal
    a = F.linear(h, module.weight, module.bias)
    e = ops.lra_error(a, method_signal, module.beta, module.activation, module.error,
                      module.use_fprime, module.negative_slope,
                      rule_surrogate(module.activation, module.surrogate))
    return e, bp_signal * functional.activation_derivative(a, module.activation,
                                                              module.negative_slope)


def format_table(report: dict[str, dict[str, float]]) -> str:
    """A fixed-width text table of an :func:`alignment` report."""
    columns = ("signal_cosine", "signal_cosine_std", "update_cosine", "weight_angle", "norm_ratio")
    width = max([5] + [len(name) for name in report])
    lines = [f"{'layer':<{width}}  " + "  ".join(f"{c:>17}" for c in columns)]
    for name, row in report.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{row[c]:>17.4f}" for c in columns))
    return "\n".join(lines)
