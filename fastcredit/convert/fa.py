"""``convert`` for the FA family: swap each Linear/Conv for the fastcredit layer holding the
same Parameters."""

from __future__ import annotations

from torch import nn

from .._spec import check_seed, derive_seed
from ..nn import Conv1d, Conv2d, Conv3d, Linear
from ._common import FASTCREDIT, Entry, join, kept_note, swap_blocker

LAYERS = {nn.Linear: Linear, nn.Conv1d: Conv1d, nn.Conv2d: Conv2d, nn.Conv3d: Conv3d}
OPTIONS = ("feedback", "seed", "feedback_scale", "feedback_dist")


def _replacement(module: nn.Module, method: str, options: dict, index: int) -> nn.Module:
    weight = module.weight
    factory = {"device": weight.device, "dtype": weight.dtype}
    layer_options = {k: v for k, v in options.items() if k != "seed"}
    if "seed" in options:
        layer_options["seed"] = derive_seed(options["seed"], index)
    if isinstance(module, nn.Linear):
        new = Linear(module.in_features, module.out_features, module.bias is not None,
                     method=method, **factory, **layer_options)
    else:
        new = LAYERS[type(module)](
            module.in_channels, module.out_channels, module.kernel_size, module.stride,
            module.padding, module.dilation, module.groups, module.bias is not None,
            module.padding_mode, method=method, **factory, **layer_options)
    new.weight, new.bias = module.weight, module.bias  # the same Parameter objects
    new.train(module.training)
    new.record_weight_norm_()
    return new


def convert_feedback_layers(model, method, report, options) -> nn.Module:
    """Replace every Linear/Conv of ``model`` (see :func:`fastcredit.convert`)."""
    if "seed" in options:
        check_seed(options["seed"])
    new_of: dict[int, nn.Module] = {}  # shared modules are converted once

    def visit(module: nn.Module, path: str) -> nn.Module:
        kind = type(module).__name__
        if id(module) in new_of:
            return new_of[id(module)]
        blocker = swap_blocker(module) if type(module) in LAYERS else None
        if blocker is not None:
            report.unsupported.append(Entry(path, kind, blocker))
            return module
        if type(module) in LAYERS:
            new = _replacement(module, method, options, len(new_of))
            new_of[id(module)] = new
            report.converted.append(Entry(path, kind, f"fastcredit.nn.{type(new).__name__}"
                                                      f"({new._feedback_repr()})"))
            return new
        note = kept_note(module)
        if note is not None and (not module._modules or isinstance(module, FASTCREDIT)):
            report.unchanged.append(Entry(path, kind, note))
            return module
        if note is None:
            report.unsupported.append(Entry(path, kind, (
                "has its own parameters that the method cannot reach: kept as is, its backward "
                "is backprop's")))
            if type(module).__module__.startswith("torch."):
                return module  # a torch layer using its children's weights functionally
        for name, child in list(module._modules.items()):
            if child is not None:
                new_child = visit(child, join(path, name))
                if new_child is not child:
                    setattr(module, name, new_child)
        return module

    return visit(model, "")
