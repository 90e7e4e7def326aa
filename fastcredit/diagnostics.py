"""How closely a method's learning signals follow backpropagation, layer by layer.

Definitions (../shared/ALGORITHMS.md §9), for every module that owns a ``weight`` parameter:

* signal alignment: per-sample cosine between the gradient the method delivers to the module's
  output and the true backprop gradient at the same tensor (mean and std over the batch; for
  DFA this is e B at the block, for LRA the error pathway's signal);
* update alignment: cosine between the method's ``weight.grad`` and backprop's;
* weight alignment: angle between W and the layer's effective feedback matrix, and the norm
  ratio ``|B| / |W|``, where the layer exposes a ``feedback_matrix()`` of W's size.

Backprop is computed on the same model and parameters under :func:`fastcredit.nn.backprop`, with
the random state replayed so dropout masks match. Nothing is copied and no ``.grad`` is touched.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .nn.mode import backprop

EPS = 1e-30  # guards 0 / 0 only: signals can be tiny (LRA errors scale like beta^depth)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return (a @ b / (a.norm() * b.norm() + EPS)).item()


def _angle(cosine: float) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def _weighted_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: module for name, module in model.named_modules()
            if isinstance(getattr(module, "weight", None), nn.Parameter)
            and module.weight.requires_grad}


def _signals_and_updates(model, modules, x, y, loss_fn, seed):
    """Gradients at each module's output and of each module's weight, for one pass."""
    signals: dict[str, torch.Tensor] = {}

    def capture(name):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(lambda grad: signals.__setitem__(name, grad.detach()))
        return hook

    handles = [m.register_forward_hook(capture(n)) for n, m in modules.items()]
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            loss = loss_fn(model(x), y)
        weights = [m.weight for m in modules.values()]
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    return signals, dict(zip(modules, grads))


def alignment(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per-layer alignment of ``model``'s method with backprop on the probe batch ``(x, y)``.

    Returns ``{module_name: {"signal_cosine", "signal_cosine_std", "signal_angle",
    "update_cosine", "update_angle", "weight_angle", "norm_ratio"}}``; a metric that does not
    apply to a layer (no feedback matrix of W's size, no gradient) is ``nan``.
    """
    modules = _weighted_modules(model)
    if not modules:
        raise ValueError("alignment: the model has no module with a trainable weight")
    if len(x) == 0:
        raise ValueError(f"alignment: the probe batch is empty (x of shape {tuple(x.shape)}); "
                         "cosines need at least one sample")
    method_signals, method_updates = _signals_and_updates(model, modules, x, y, loss_fn, seed)
    with backprop():
        bp_signals, bp_updates = _signals_and_updates(model, modules, x, y, loss_fn, seed)
    report = {}
    for name, module in modules.items():
        row = dict.fromkeys(("signal_cosine", "signal_cosine_std", "signal_angle",
                             "update_cosine", "update_angle", "weight_angle", "norm_ratio"),
                            math.nan)
        if name in method_signals and name in bp_signals:
            a = method_signals[name].flatten(1).double()
            b = bp_signals[name].flatten(1).double()
            per_sample = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)
            row["signal_cosine"] = per_sample.mean().item()
            row["signal_cosine_std"] = per_sample.std().item() if len(per_sample) > 1 else 0.0
            row["signal_angle"] = _angle(row["signal_cosine"])
        if method_updates[name] is not None and bp_updates[name] is not None:
            row["update_cosine"] = _cosine(method_updates[name], bp_updates[name])
            row["update_angle"] = _angle(row["update_cosine"])
        feedback = module.feedback_matrix() if hasattr(module, "feedback_matrix") else None
        if isinstance(feedback, torch.Tensor) and feedback.numel() == module.weight.numel():
            weight = module.weight.detach()
            row["weight_angle"] = _angle(_cosine(weight, feedback))
            row["norm_ratio"] = (feedback.norm() / (weight.norm() + EPS)).item()
        report[name] = row
    return report


def format_table(report: dict[str, dict[str, float]]) -> str:
    """A fixed-width text table of an :func:`alignment` report."""
    columns = ("signal_cosine", "signal_cosine_std", "update_cosine", "weight_angle", "norm_ratio")
    width = max([5] + [len(name) for name in report])
    lines = [f"{'layer':<{width}}  " + "  ".join(f"{c:>17}" for c in columns)]
    for name, row in report.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{row[c]:>17.4f}" for c in columns))
    return "\n".join(lines)
