"""``convert`` for DFA: find the hidden blocks, attach a point after each and the output op
after the head, as forward hooks (no state-dict key moves)."""

from __future__ import annotations

import torch
from torch import nn

from .._spec import check_choice
from ..nn import DFAOutput, DFAPoint
from ._common import (
    ACTIVATIONS,
    CONTAINERS,
    FASTCREDIT,
    Entry,
    is_weight_layer,
    join,
    kept_note,
    owns_parameters,
)

OPTIONS = ("num_outputs", "feedback", "normalization", "dist", "scale", "signal", "batch_dims",
           "seed", "spatial", "error_scale", "preset", "placement")
PLACEMENTS = ("before_weights", "after_activation")
RESHAPES = (nn.Flatten, nn.Unflatten, nn.Identity)


def _through_point(module: nn.Module, inputs, output):
    """Forward hook of a block boundary: the output goes through the module's DFA point."""
    point = module.dfa_point
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"a DFA block boundary must return a tensor, {type(module).__name__} "
                        f"returned {type(output).__name__}")
    return point(output)


def _new_forward(model: nn.Module, inputs):
    """Forward pre-hook of the converted model: each call is a new forward, so records of an
    abandoned one (a probe of a sub-network, an exception before the head) are dropped. (A
    function of the module, not a closure: copies and pickles keep working.)"""
    model.get_submodule(model._dfa_output_path).discard_pending()


def _through_output(module: nn.Module, inputs, output):
    """Forward hook of the head: its output goes through the DFA output op."""
    return module.dfa_output(output)


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The children of the root and of containers (opened recursively), in registration
    order: the sequence convert reads the network's layers from."""
    found = []

    def scan(container: nn.Module, prefix: str) -> None:
        for name, child in container._modules.items():
            if child is None:
                continue
            path = join(prefix, name)
            if isinstance(child, CONTAINERS):
                scan(child, path)
            else:
                found.append((path, child))

    if not (isinstance(model, ACTIVATIONS) or is_weight_layer(model)):
        scan(model, "")
    return found


def _holds_weights(module: nn.Module) -> bool:
    return any(is_weight_layer(m) for m in module.modules())


def _block_boundaries(model: nn.Module, placement: str) -> list[tuple[str, nn.Module]]:
    """Where the points go. A block ends at an activation module or at a module holding
    weight layers (a residual block: cutting inside it would feed its first half by DFA
    while its shortcut carried the true gradient). With ``"before_weights"`` the point moves
    on over the modules that follow (pooling, dropout, normalisation, further activations)
    up to the next weight layer, as Nøkland's, Launay's and TinyDFA's code place it; it
    stops before a trailing pure reshape (Flatten, Unflatten, Identity), which changes no
    value: the dense feedback is then the same, and the point keeps the map's shape for
    ``spatial="shared"``."""
    leaves = _leaves(model)
    found: list[tuple[str, nn.Module]] = []
    for i, (path, module) in enumerate(leaves):
        if not (isinstance(module, ACTIVATIONS)
                or (not is_weight_layer(module) and _holds_weights(module))):
            continue
        if placement == "before_weights":
            run = [(path, module)]
            for later in leaves[i + 1:]:
                if is_weight_layer(later[1]) or _holds_weights(later[1]) or isinstance(
                        later[1], FASTCREDIT):
                    break
                run.append(later)
            path, module = next(leaf for leaf in reversed(run)
                                if not isinstance(leaf[1], RESHAPES))
        if not found or found[-1][1] is not module:
            found.append((path, module))
    return found


def convert_dfa(model, report, options) -> None:
    """Attach DFA points and the output op to ``model`` (see :func:`fastcredit.convert`)."""
    if options.get("signal") == "target":
        raise ValueError("convert(method='dfa') cannot use signal='target': DRTP needs the labels "
                         "in the output call; build DFAOutput(..., signal='target') by hand")
    placement = options.get("placement", "before_weights")
    check_choice("placement", placement, PLACEMENTS)
    order = {id(m): i for i, (_, m) in enumerate(model.named_modules())}
    last_descendant = {id(module): max(order[id(m)] for m in module.modules())
                       for module in model.modules()}
    weight_layers = [(p, m) for p, m in model.named_modules() if is_weight_layer(m)]
    if not weight_layers:
        raise ValueError("convert(method='dfa'): the model has no Linear or Conv layer")
    boundaries = [(p, m) for p, m in _block_boundaries(model, placement)
                  if any(order[id(w)] > last_descendant[id(m)] for _, w in weight_layers)]
    if not boundaries:
        raise ValueError(
            "convert(method='dfa') found no hidden block: no activation module or block module "
            "precedes a weight layer (activations applied as functions are invisible to it); "
            "place fastcredit.nn.DFAPoint modules by hand")
    tail = [p for p, w in weight_layers if order[id(w)] > last_descendant[id(boundaries[-1][1])]]
    if len(tail) != 1:
        raise ValueError(
            f"convert(method='dfa'): the output block after the last block boundary "
            f"{boundaries[-1][0]!r} must hold exactly one Linear/Conv layer, found {tail}; "
            "place fastcredit.nn.DFAPoint modules by hand")
    head_path = tail[0]
    head = model.get_submodule(head_path)
    dfa_options = {k: v for k, v in options.items()
                   if k not in ("num_outputs", "spatial", "placement")}
    num_outputs = options.get("num_outputs")
    if num_outputs is None:
        if not isinstance(head, nn.Linear):
            raise ValueError(f"convert(method='dfa'): the head {head_path!r} is a "
                             f"{type(head).__name__}; pass num_outputs")
        num_outputs = head.out_features
    # The model's own forward delimits a forward (_new_forward), so a block that runs several
    # times in it gets feedback at every run.
    point_options = {"reuse": True}
    if "spatial" in options:
        point_options["spatial"] = options["spatial"]
    points = []
    for path, module in boundaries:
        if hasattr(module, "dfa_point"):
            raise ValueError(f"convert(method='dfa'): {path!r} already carries a DFA point")
        point = DFAPoint(**point_options)
        module.add_module("dfa_point", point)
        module.register_forward_hook(_through_point)
        points.append(point)
    output = DFAOutput(points, num_outputs, **dfa_options)
    output.to(head.weight.device)
    head.add_module("dfa_output", output)
    head.register_forward_hook(_through_output)
    model._dfa_output_path = join(head_path, "dfa_output")
    model.register_forward_pre_hook(_new_forward)

    # The report: each boundary's block is every module with parameters registered after the
    # previous boundary's subtree and up to the end of its own.
    owners = [(p, m) for p, m in model.named_modules()
              if owns_parameters(m) and not isinstance(m, FASTCREDIT)]
    start = -1
    for path, module in boundaries:
        end = last_descendant[id(module)]
        report.blocks[path] = [p for p, m in owners if start < order[id(m)] <= end]
        start = end
        what = ("activation" if isinstance(module, ACTIVATIONS)
                else "block" if _holds_weights(module)
                else "module (the last before the next weight layer)")
        report.converted.append(Entry(path, type(module).__name__,
                                      f"DFA point after this {what}'s output"))
    report.blocks["output"] = [p for p, m in owners if order[id(m)] > start]
    report.converted.append(Entry(head_path, type(head).__name__,
                                  f"head: DFAOutput(num_outputs={num_outputs}) after it"))
    in_block = {p for block in report.blocks.values() for p in block}
    marked = {p for p, _ in boundaries} | {head_path}
    for path, module in model.named_modules():
        if path in marked or isinstance(module, (DFAPoint, DFAOutput)):
            continue
        if module._modules and not owns_parameters(module):
            continue  # containers and blocks: their leaves are listed
        note = kept_note(module)
        if path in in_block:
            note = f"trained within its DFA block by autograd ({note or type(module).__name__})"
        report.unchanged.append(Entry(path, type(module).__name__, note or "kept as is"))
