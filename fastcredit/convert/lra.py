"""``convert`` for LRA-E: Linear and Conv layers become LRA blocks holding the same
Parameters. A flat ``nn.Sequential`` (MLP or conv net) folds each activation that directly
follows a weight layer into its block; any other model (ResNet-style, custom forward) has its
layers replaced in place with identity blocks, its activations, pooling, normalisation and
residual additions keeping their ordinary backward. ``unconvert``'s inverse gives the torch
layers back."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import LRAConv1d, LRAConv2d, LRAConv3d, LRALinear, LRAOutput
from ..nn.lra.blocks import LRABlock
from ._common import Entry, join, kept_note, owns_parameters, swap_blocker

OPTIONS = ("beta", "gamma", "error", "use_fprime", "surrogate", "refine_steps",
           "clip_direction", "clip_update", "feedback_std", "loss_reduction")


def _lra_activation(module: nn.Module) -> tuple[str, float] | None:
    """(LRA activation name, negative slope), or None if LRA has no such activation."""
    if isinstance(module, nn.LeakyReLU):
        return "leaky_relu", module.negative_slope
    if isinstance(module, nn.GELU):
        return ("gelu", 0.01) if module.approximate == "none" else None
    if isinstance(module, nn.Softplus):
        return ("softplus", 0.01) if (module.beta, module.threshold) == (1.0, 20.0) else None
    names = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ReLU: "relu", nn.ReLU6: "relu6",
             nn.Identity: "identity"}
    name = names.get(type(module))
    return None if name is None else (name, 0.01)


_CONVS = {nn.Conv1d: LRAConv1d, nn.Conv2d: LRAConv2d, nn.Conv3d: LRAConv3d}
# Parameter-free modules a flat Sequential may hold between blocks: the displacement passes
# through their true backward.
_PASSTHROUGH = (nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)
_REFINEMENT = ("refine_steps", "clip_direction")


def _is_weight_layer(module: nn.Module) -> bool:
    return type(module) is nn.Linear or type(module) in _CONVS


def _block_for(layer: nn.Module, output: bool, activation: tuple[str, float], options: dict):
    """The LRA block replacing ``layer`` (its Parameters reused)."""
    factory = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    bias = layer.bias is not None
    if output:
        keep = {k: v for k, v in options.items() if k not in ("use_fprime", "error", "surrogate")}
        block = LRAOutput(layer.in_features, layer.out_features, bias=bias, weight_init="zero",
                          **factory, **keep)
    else:
        name, slope = activation
        keep = {k: v for k, v in options.items() if k != "loss_reduction"}
        if type(layer) is nn.Linear:
            block = LRALinear(layer.in_features, layer.out_features, name, bias=bias,
                              negative_slope=slope, weight_init="zero", **factory, **keep)
        else:
            if not isinstance(layer.padding, tuple) or layer.padding_mode != "zeros":
                raise ValueError(f"convert(method='lra'): {layer} needs numeric padding with "
                                 f"padding_mode='zeros'")
            if any(options.get(k) not in (None, 1) for k in _REFINEMENT):
                raise ValueError("convert(method='lra'): refine_steps and clip_direction are "
                                 "not offered for convolution blocks")
            keep = {k: v for k, v in keep.items() if k not in _REFINEMENT}
            block = _CONVS[type(layer)](
                layer.in_channels, layer.out_channels, layer.kernel_size, name,
                stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                groups=layer.groups, bias=bias, negative_slope=slope, weight_init="zero",
                **factory, **keep)
    block.weight, block.bias = layer.weight, layer.bias  # the same Parameter objects
    block.train(layer.training)
    return block


def _note(block) -> str:
    learnt_e = " (E is a new Parameter: build the optimizer after convert)" if (
        block.gamma > 0) else ""
    return f"fastcredit.nn.{block!r}{learnt_e}"


def convert_lra(model, report, options) -> None:
    """Replace a model's Linear/Conv layers by LRA blocks (see :func:`fastcredit.convert`)."""
    items = [(name, m) for name, m in model._modules.items() if m is not None]
    flat = isinstance(model, nn.Sequential) and all(
        _is_weight_layer(m) or _lra_activation(m) is not None or isinstance(m, _PASSTHROUGH)
        for _, m in items)
    if flat:
        _convert_sequential(model, items, report, options)
    else:
        _convert_in_place(model, report, options)


def _convert_sequential(model, items, report, options) -> None:
    weights = [i for i, (_, m) in enumerate(items) if _is_weight_layer(m)]
    blocked = [(items[i][0], swap_blocker(items[i][1])) for i in weights
               if swap_blocker(items[i][1]) is not None]
    if blocked:
        raise ValueError(f"convert(method='lra') cannot replace {blocked}")
    if not weights or weights[-1] != len(items) - 1 or type(items[-1][1]) is not nn.Linear:
        raise ValueError("convert(method='lra'): the last module must be the Linear output "
                         "layer producing logits (LRAOutput assumes a softmax cross-entropy)")
    for index, (name, module) in enumerate(items):
        if not _is_weight_layer(module):
            if not (index and _is_weight_layer(items[index - 1][1])):
                report.unchanged.append(Entry(name, type(module).__name__,
                                              "no parameters: keeps its true derivative"))
            continue
        output = index == len(items) - 1
        act_name, act = None, nn.Identity()
        if not output and _lra_activation(items[index + 1][1]) is not None:
            act_name, act = items[index + 1]
        block = _block_for(module, output, _lra_activation(act), options)
        if act_name is not None:
            setattr(model, act_name, nn.Identity())
            block._lra_folded = (act_name, act)  # for unconvert: the slot and its module
            report.converted.append(Entry(act_name, type(act).__name__,
                                          f"nn.Identity: folded into {type(block).__name__} "
                                          f"{name!r}"))
        setattr(model, name, block)
        report.converted.append(Entry(name, type(module).__name__, _note(block)))
    report.converted.sort(key=lambda e: list(model._modules).index(e.path))


def _convert_in_place(model, report, options) -> None:
    # every path of a module registered twice, so a shared layer becomes one shared block
    all_paths = [(path, m) for path, m in model.named_modules(remove_duplicate=False) if path]
    named = [(path, m) for path, m in model.named_modules() if path]
    layers = [(path, m) for path, m in named if _is_weight_layer(m)]
    linears = [path for path, m in layers if type(m) is nn.Linear]
    if not linears:
        raise ValueError(f"convert(method='lra') needs a Linear output layer producing logits; "
                         f"{type(model).__name__} has none")
    blocked = [(path, swap_blocker(m)) for path, m in layers if swap_blocker(m) is not None]
    if blocked:
        raise ValueError(f"convert(method='lra') cannot replace {blocked}")
    # Checked before anything changes: a model half converted would be neither rule.
    foreign = [(path, m) for path, m in named if not _is_weight_layer(m)
               and owns_parameters(m) and kept_note(m) is None]
    if foreign:
        path, module = foreign[0]
        raise ValueError(
            f"convert(method='lra') has no LRA block for {path!r} ({type(module).__name__}): "
            "its weights transport the error themselves (attention, recurrent, transformers' "
            "Conv1D, custom parameters); LRA converts Linear and Conv layers, with "
            "normalisation and embeddings kept")
    for path, module in named:
        if _is_weight_layer(module):
            block = _block_for(module, path == linears[-1], ("identity", 0.01), options)
            for other, same in all_paths:
                if same is module:
                    parent, _, name = other.rpartition(".")
                    setattr(model.get_submodule(parent), name, block)
            report.converted.append(Entry(path, type(module).__name__, _note(block)))
        elif not owns_parameters(module):
            if not any(True for _ in module.children()):
                report.unchanged.append(Entry(path, type(module).__name__,
                                              "no parameters: keeps its true derivative"))
        else:  # normalisation, embeddings (the check above let nothing else through)
            report.unsupported.append(Entry(
                path, type(module).__name__,
                f"{kept_note(module)}; its parameters are trained on LRA's displacement passed "
                f"through its ordinary backward, not by an LRA rule"))


def plain_of(module: nn.Module) -> nn.Module | None:
    """The torch layer an LRA block came from, holding its W and b (E is dropped), or None
    when ``module`` is no LRA block. ValueError for a block whose activation has no slot to
    go back to (built by hand with a nonlinearity, not folded by convert)."""
    if not isinstance(module, LRABlock):
        return None
    activation = getattr(module, "activation", "identity")
    if activation != "identity" and not hasattr(module, "_lra_folded"):
        raise ValueError(f"unconvert: this {type(module).__name__} applies {activation!r} "
                         "itself and was not made by convert, so no plain layer equals it")
    with torch.device("meta"):
        if isinstance(module, (LRALinear, LRAOutput)):
            plain = nn.Linear(module.in_features, module.out_features,
                              bias=module.bias is not None)
        else:
            cls = {LRAConv1d: nn.Conv1d, LRAConv2d: nn.Conv2d, LRAConv3d: nn.Conv3d}[type(module)]
            plain = cls(module.in_channels, module.out_channels, module.kernel_size,
                        stride=module.stride, padding=module.padding, dilation=module.dilation,
                        groups=module.groups, bias=module.bias is not None)
    plain.weight, plain.bias = module.weight, module.bias  # the same Parameter objects
    plain.train(module.training)
    return plain


def unfold(parent: nn.Module, block: nn.Module, path: str, check) -> None:
    """Put back into ``parent`` (at ``path``) the activation module convert folded into
    ``block``; ``check(slot, slot_path)`` first (unconvert's hook check)."""
    folded = getattr(block, "_lra_folded", None)
    if folded is not None and isinstance(parent._modules.get(folded[0]), nn.Identity):
        check(parent._modules[folded[0]], join(path, folded[0]))
        setattr(parent, folded[0], folded[1])
