"""``convert`` for DFA: find the hidden blocks, attach a point after each and the output op
after the head (or on its input), as forward hooks (no state-dict key moves); and
``unconvert``'s inverse, which detaches them."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .._spec import check_choice
from ..nn import DFAOutput, DFAPoint
from ._common import (
    ACTIVATIONS,
    CONTAINERS,
    FASTCREDIT,
    NORMS,
    Entry,
    is_weight_layer,
    join,
    kept_note,
    owns_parameters,
)
from .fa import is_transformers_conv1d
from .fold import attach_fold, foldable_norm, remove_fold

OPTIONS = ("num_outputs", "feedback", "normalization", "dist", "scale", "signal", "batch_dims",
           "seed", "spatial", "error_scale", "preset", "placement", "sublayers", "error_at")
PLACEMENTS = ("before_weights", "after_activation")
ERROR_AT = ("output", "head_input")
RESHAPES = (nn.Flatten, nn.Unflatten, nn.Identity)
_POOLS = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
          nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
          nn.modules.pooling._LPPoolNd)
# Modules with weight matrices besides the Linear/Conv layers a head can be: they make a
# module a block, and an RNN (its own nonlinearity inside) is a block by itself.
OTHER_WEIGHTS = (nn.modules.conv._ConvTransposeNd, nn.MultiheadAttention, nn.RNNBase)
_BY_HAND = ("place the points by hand: wrap each hidden block's output in a "
            "fastcredit.nn.DFAPoint() and the network output in "
            "fastcredit.nn.DFAOutput(points, num_outputs) (docs/methods.md, DFA)")


def _detached(value):
    """``value`` with every tensor in it (nested tuples and lists) detached."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        items = [_detached(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return value


def _with_point(output, point: DFAPoint, module: nn.Module):
    """``output`` with its hidden state sent through ``point``: the tensor itself, the first
    element of a tuple or list, or the first field set of a dataclass (a transformers
    ``ModelOutput``). The other tensors pass through detached: the block is trained by its
    point's feedback alone (an LSTM's (h, c) used by the head would otherwise carry the
    true gradient into it)."""
    if isinstance(output, torch.Tensor):
        return point(output)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        items = [point(output[0]), *(_detached(v) for v in output[1:])]
        return type(output)(*items) if hasattr(output, "_fields") else type(output)(items)
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        values = {f.name: getattr(output, f.name) for f in dataclasses.fields(output) if f.init}
        first = next((k for k, v in values.items() if v is not None), None)
        if first is not None and isinstance(values[first], torch.Tensor):
            return dataclasses.replace(output, **{k: point(v) if k == first else _detached(v)
                                                  for k, v in values.items()})
    raise TypeError(f"a DFA block boundary must return a tensor, or a tuple or dataclass whose "
                    f"first entry is one; {type(module).__name__} returned "
                    f"{type(output).__name__}: {_BY_HAND}")


def _through_point(module: nn.Module, inputs, output):
    """Forward hook of a block boundary: its hidden state goes through the module's point."""
    return _with_point(output, module.dfa_point, module)


def _new_forward(model: nn.Module, inputs):
    """Forward pre-hook of the converted model: each call is a new forward, so records of an
    abandoned one (a probe of a sub-network, an exception before the head) are dropped. (A
    function of the module, not a closure: copies and pickles keep working.)"""
    model.get_submodule(model._dfa_output_path).discard_pending()


def _token_dims(shape: torch.Size, rows: tuple[int, ...]) -> tuple[int, ...]:
    """Row dims of a sequence point ``shape`` (every dim but the last, features last) under
    an output whose row dims have sizes ``rows``: the natural order when the point's rows
    are the output's (causal-LM logits); else the dims matching those sizes first, in their
    order (so a sequence-first ``[T, N, D]`` under a pooled ``[N, C]`` gives (1, 0)); the
    natural order where they cannot be matched (DFAOutput then names the mismatch).
    ValueError where sizes alone cannot tell the dims apart (``T == N`` under a pooled
    output): feeding the wrong rows would be silent."""
    dims = list(range(len(shape) - 1))
    if tuple(shape[:-1]) == tuple(rows):
        return tuple(dims)
    first: list[int] = []
    for size in rows:
        matches = [d for d in dims if d not in first and shape[d] == size]
        if not matches:
            return tuple(dims)
        if len(matches) > 1:
            raise ValueError(
                f"convert(method='dfa'): a point's tensor {list(shape)} has several dims of "
                f"the output's row size {size}, so which dims index the output's rows "
                f"{list(rows)} is ambiguous; use a batch size that differs from the sequence "
                "length, or place fastcredit.nn.DFAPoint(batch_dims=...) by hand")
        first.append(matches[0])
    return tuple(first + [d for d in dims if d not in first])


def _to_output(module: nn.Module, value):
    """``value`` (the head's output, or its input for ``error_at="head_input"``) through the
    head's DFA output op. With automatic token dims (a Linear head, no ``batch_dims`` given)
    every dim of ``value`` but the last indexes rows (causal-LM logits [N, T, V]: (0, 1)),
    and so does every dim but the last of a sequence point's tensor, ordered to line up with
    ``value``'s rows."""
    dfa = module.dfa_output
    if getattr(module, "_dfa_token_dims", False) and isinstance(value, torch.Tensor):
        dims = tuple(range(value.dim() - 1))
        if dfa.batch_dims != dims:  # nn.Module.__setattr__ is slow: set on change only
            dfa.batch_dims = dims
        rows = tuple(value.shape[:-1])
        for index, h in dfa._tape:
            point = dfa.points[index]
            if getattr(point, "_dfa_tokens", False):
                dims = _token_dims(h.shape, rows)
                if point.batch_dims != dims:
                    point.batch_dims = dims
    slot = module.__dict__.get("_dfa_fold_slot")
    if slot is not None:  # the blocks have run: let the recorded norm output go
        slot.clear()
    return dfa(value)


def _through_output(module: nn.Module, inputs, output):
    """Forward hook of the head: its output goes through the DFA output op."""
    return _to_output(module, output)


def _before_head(module: nn.Module, inputs):
    """Forward pre-hook of the head (``error_at="head_input"``): its input goes through the
    DFA output op, so the error projected is the gradient at the head's input."""
    return (_to_output(module, inputs[0]), *inputs[1:])


def _check_error_at(choice: str, head: nn.Module, options: dict) -> None:
    check_choice("error_at", choice, ERROR_AT)
    if choice == "head_input":
        if not isinstance(head, nn.Linear):
            raise ValueError(f"convert(method='dfa', error_at='head_input') needs a Linear "
                             f"head, got {type(head).__name__}: use error_at='output' (the "
                             "default)")
        if options.get("signal", "error") != "error":
            raise ValueError(f"convert(method='dfa', error_at='head_input') takes "
                             f"signal='error' only, not {options['signal']!r}: the sign "
                             "signal's scale is fitted to a softmax output's error")
        if options.get("num_outputs", head.in_features) != head.in_features:
            raise ValueError(f"convert(method='dfa', error_at='head_input'): num_outputs must "
                             f"be the head's in_features {head.in_features}, got "
                             f"{options['num_outputs']}")


def _is_stack(module: nn.Module, weights: set[int]) -> bool:
    """A ModuleList or Sequential of two or more modules of one class that hold weights and
    are no weight layer themselves: repeated blocks (transformer layers, residual blocks)."""
    children = [c for c in module._modules.values() if c is not None]
    return (isinstance(module, (nn.ModuleList, nn.Sequential)) and len(children) >= 2
            and len({type(c) for c in children}) == 1 and id(children[0]) not in weights
            and all(_holds_weights(c, weights) for c in children))


def _leaves(model: nn.Module, weights: set[int]) -> list[tuple[str, nn.Module, bool]]:
    """The sequence convert reads the network's layers from, in registration order: the
    children of the root, of containers and of any module holding a stack of repeated blocks
    (a GPT-2's ``transformer`` around its ``h``, a ``TransformerEncoder``), opened
    recursively; a stack's members are not opened further. Each comes with whether it is a
    stack member."""
    found = []

    def scan(container: nn.Module, prefix: str, stack: bool) -> None:
        for name, child in container._modules.items():
            if child is None:
                continue
            path = join(prefix, name)
            if isinstance(child, CONTAINERS):
                scan(child, path, _is_stack(child, weights))
            elif (not stack and id(child) not in weights
                  and any(_is_stack(m, weights) for m in child.modules())):
                scan(child, path, False)
            else:
                found.append((path, child, stack))

    if not (isinstance(model, ACTIVATIONS) or id(model) in weights):
        scan(model, "", _is_stack(model, weights))
    return found


def _holds_weights(module: nn.Module, weights: set[int]) -> bool:
    return any(id(m) in weights for m in module.modules())


def _is_boundary(module: nn.Module, weights: set[int]) -> bool:
    """An activation, an RNN (its output sequence), or a module holding weight layers that
    is not one itself (a residual or transformer block)."""
    return (isinstance(module, (*ACTIVATIONS, nn.RNNBase))
            or (id(module) not in weights and _holds_weights(module, weights)))


def _passes_on(module: nn.Module) -> bool:
    """A module a point may move past on the way to the next weight layer: an activation,
    normalisation, dropout, pooling or pure reshape (transformers' classes named "...Norm" or
    "...Activation" among them). Registration order is not data flow: another module
    without weights (a Llama's rotary embedding, registered after its final norm but run
    before the blocks) need not sit on the path, so the point stops before it."""
    return (isinstance(module, (*ACTIVATIONS, *NORMS, nn.modules.dropout._DropoutNd, *_POOLS,
                                *RESHAPES))
            or type(module).__name__.endswith(("Norm", "Activation")))


def _block_boundaries(model: nn.Module, placement: str,
                      weights: set[int]) -> list[tuple[str, nn.Module, nn.Module | None]]:
    """Where the points go. A block ends at an activation module, an RNN, or a module
    holding weight layers (a residual or transformer block: cutting inside it would feed
    its first half by DFA while its shortcut carried the true gradient). With
    ``"before_weights"`` the point moves on over the modules that follow (pooling, dropout,
    normalisation, further activations: :func:`_passes_on`) up to the next weight layer, as
    Nøkland's, Launay's and TinyDFA's code place it, stopping before any other module; it
    stops before a trailing pure reshape (Flatten, Unflatten, Identity), which changes no
    value: the dense feedback is then the same, and the point keeps the map's shape for
    ``spatial="shared"``. Each comes with the block it
    closes when that is a member of a stack of repeated blocks (else None)."""
    leaves = _leaves(model, weights)
    found: list[tuple[str, nn.Module, nn.Module | None]] = []
    for i, (path, module, stacked) in enumerate(leaves):
        if not _is_boundary(module, weights):
            continue
        if placement == "before_weights":
            run = [(path, module)]
            for later in leaves[i + 1:]:
                if (_holds_weights(later[1], weights) or isinstance(later[1], FASTCREDIT)
                        or not _passes_on(later[1])):
                    break
                run.append(later[:2])
            path, module = next(leaf for leaf in reversed(run)
                                if not isinstance(leaf[1], RESHAPES))
        if not found or found[-1][1] is not module:
            found.append((path, module, leaves[i][1] if stacked else None))
    return found


def _attention_child(block: nn.Module) -> tuple[str, nn.Module] | None:
    """A block's attention sublayer: its first child that is an ``nn.MultiheadAttention`` or
    whose class name ends in "Attention" (transformers' naming: GPT2Attention,
    BertAttention, ViTAttention)."""
    for name, child in block.named_children():
        if isinstance(child, nn.MultiheadAttention) or type(child).__name__.endswith("Attention"):
            return name, child
    return None


def _weight_layers(model: nn.Module) -> tuple[set[int], list[tuple[str, nn.Module]]]:
    """The ids of every module with weight matrices DFA's discovery knows (Linear, Conv,
    ConvTranspose, transformers' Conv1D, MultiheadAttention, RNNs), and the outermost of
    them (not inside another one: a MultiheadAttention's out_proj is not counted twice)."""
    weights = {id(m) for m in model.modules()
               if is_weight_layer(m) or isinstance(m, OTHER_WEIGHTS) or is_transformers_conv1d(m)}
    outermost: list[tuple[str, nn.Module]] = []
    for path, module in model.named_modules():
        if id(module) in weights and not any(path.startswith(f"{p}.") for p, _ in outermost):
            outermost.append((path, module))
    return weights, outermost


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
    weights, weight_layers = _weight_layers(model)
    if not weight_layers:
        raise ValueError("convert(method='dfa'): the model has no Linear or Conv layer")
    boundaries = [(p, m, s) for p, m, s in _block_boundaries(model, placement, weights)
                  if any(order[id(w)] > last_descendant[id(m)] for _, w in weight_layers)]
    if not boundaries:
        raise ValueError(
            "convert(method='dfa') found no hidden block: no activation module, RNN or module "
            "holding weight layers precedes a weight layer among the children of the model, "
            "of its containers and of modules holding a ModuleList/Sequential of repeated "
            f"blocks (activations applied as functions are invisible to it); {_BY_HAND}")
    tail = [p for p, w in weight_layers if order[id(w)] > last_descendant[id(boundaries[-1][1])]]
    if len(tail) != 1:
        raise ValueError(
            f"convert(method='dfa'): the output block after the last block boundary "
            f"{boundaries[-1][0]!r} must hold exactly one Linear/Conv layer, found {tail}; "
            f"{_BY_HAND}")
    head_path = tail[0]
    head = model.get_submodule(head_path)
    if not is_weight_layer(head):
        raise ValueError(f"convert(method='dfa'): the output layer {head_path!r} is a "
                         f"{type(head).__name__}, not a Linear or Conv layer; {_BY_HAND}")
    dfa_options = {k: v for k, v in options.items()
                   if k not in ("num_outputs", "spatial", "placement", "sublayers", "error_at")}
    error_at = options.get("error_at", "output")
    _check_error_at(error_at, head, options)
    num_outputs = options.get("num_outputs")
    if error_at == "head_input":
        num_outputs = head.in_features
    elif num_outputs is None:
        if not isinstance(head, nn.Linear):
            raise ValueError(f"convert(method='dfa'): the head {head_path!r} is a "
                             f"{type(head).__name__}; pass num_outputs")
        num_outputs = head.out_features
    elif (isinstance(head, nn.Linear) and "batch_dims" not in options
          and num_outputs != head.out_features):  # automatic token dims: C is the last dim
        raise ValueError(f"convert(method='dfa'): num_outputs={num_outputs} but the head "
                         f"{head_path!r} has {head.out_features} outputs; leave num_outputs "
                         "out, or pass batch_dims for an output whose rows span other dims")
    # TinyDFA's finer placement: a point on each block's attention sublayer as well.
    sublayers = []
    if options.get("sublayers", False):
        block_path = {id(m): p for p, m in model.named_modules()}
        sublayers = [(join(block_path[id(b)], a[0]), a[1], None) for _, _, b in boundaries
                     if b is not None and (a := _attention_child(b)) is not None]
        if not sublayers:
            raise ValueError("convert(method='dfa', sublayers=True) found no attention sublayer "
                             "(an nn.MultiheadAttention or a child class named '...Attention') "
                             f"in a block of a stack of repeated blocks; {_BY_HAND}")
    boundaries = sorted(boundaries + sublayers, key=lambda b: last_descendant[id(b[1])])
    # Each point's block: the modules with parameters registered after the previous point's
    # subtree and up to the end of its own.
    owners = [(p, m) for p, m in model.named_modules()
              if owns_parameters(m) and not isinstance(m, FASTCREDIT)]
    regions, start = [], -1
    for _, module, _ in boundaries:
        end = last_descendant[id(module)]
        regions.append([(p, m) for p, m in owners if start < order[id(m)] <= end])
        start = end
    # Token dims (a Linear head, no batch_dims given): a point of a block without
    # convolutions takes every dim but the last as rows (_to_output).
    tokens = "batch_dims" not in options and isinstance(head, nn.Linear)
    # The model's own forward delimits a forward (_new_forward), so a block that runs several
    # times in it gets feedback at every run.
    point_options = {"reuse": True}
    if "spatial" in options:
        point_options["spatial"] = options["spatial"]
    points = []
    for (path, module, _), region in zip(boundaries, regions):
        if hasattr(module, "dfa_point"):
            raise ValueError(f"convert(method='dfa'): {path!r} already carries a DFA point")
        point = DFAPoint(**point_options)
        point._dfa_tokens = tokens and not any(
            isinstance(m, nn.modules.conv._ConvNd) for _, owner in region for m in owner.modules())
        module.add_module("dfa_point", point)
        module.register_forward_hook(_through_point)
        points.append(point)
    output = DFAOutput(points, num_outputs, **dfa_options)
    output.to(head.weight.device)
    head.add_module("dfa_output", output)
    head._dfa_token_dims = tokens
    if error_at == "head_input":
        head.register_forward_pre_hook(_before_head)
    else:
        head.register_forward_hook(_through_output)
    model._dfa_output_path = join(head_path, "dfa_output")
    model.register_forward_pre_hook(_new_forward)
    slot = attach_fold([m for _, m in owners])
    if slot is not None:  # cleared once the output op runs (_to_output)
        head.__dict__["_dfa_fold_slot"] = slot

    sublayer_ids = {id(m) for _, m, _ in sublayers}
    for (path, module, _), region in zip(boundaries, regions):
        report.blocks[path] = [p for p, _ in region]
        what = ("attention sublayer's output" if id(module) in sublayer_ids
                else "activation's output" if isinstance(module, ACTIVATIONS)
                else "RNN's output" if isinstance(module, nn.RNNBase)
                else "block's output" if _holds_weights(module, weights)
                else "module's output (the last module before the next weight layer)")
        report.converted.append(Entry(path, type(module).__name__,
                                      f"DFA point after this {what}"))
    report.blocks["output"] = [p for p, m in owners if order[id(m)] > start]
    where = ("on its input (error_at='head_input': the points project the gradient at the "
             f"head's input, not the {head.out_features} outputs' error; Launay et al. 2020's "
             "placement for language models)" if error_at == "head_input" else "after it")
    if (error_at == "output" and isinstance(head, nn.Linear)
            and head.out_features > head.in_features and options.get("signal", "error") == "error"):
        where += (f" (each point projects the {head.out_features}-wide error; "
                  f"error_at='head_input' would project the {head.in_features}-wide gradient at "
                  "the head's input instead, Launay et al. 2020's placement for language models "
                  "and the cheaper one here)")
    report.converted.append(Entry(head_path, type(head).__name__,
                                  f"head: DFAOutput(num_outputs={num_outputs}) {where}"))
    # where the fold is expected: each later block's first norm (its input is a point's)
    norms = [[p for p, m in region if foldable_norm(m)] for region in regions[1:]]
    first_norms = {paths[0] for paths in norms if paths and slot is not None}
    in_output = set(report.blocks["output"])
    in_block = {p for block in report.blocks.values() for p in block} - in_output
    marked = {p for p, _, _ in boundaries} | {head_path}
    for path, module in model.named_modules():
        if path in marked or isinstance(module, (DFAPoint, DFAOutput)):
            continue
        if module._modules and not owns_parameters(module):
            continue  # containers and blocks: their leaves are listed
        note = kept_note(module)
        if path in in_block:
            note = f"trained within its DFA block by autograd ({note or type(module).__name__})"
            if path in first_norms:
                note += ("; the first norm of a block after a point: its affine folds into the "
                         "Linear/Conv1D it feeds while its input carries no gradient (that "
                         "layer then computes no input gradient)")
        elif path in in_output:
            note = f"in the output block: its true gradient ({note or type(module).__name__})"
        report.unchanged.append(Entry(path, type(module).__name__, note or "kept as is"))


# The child convert attaches under each name, and the hooks that call it.
_ATTACHED = {"dfa_point": (DFAPoint, (_through_point,)),
             "dfa_output": (DFAOutput, (_through_output, _before_head))}


def _remove_hooks(module: nn.Module, function) -> bool:
    """Remove every forward hook and pre-hook of ``module`` that is ``function``."""
    found = False
    for hooks, extras in ((module._forward_hooks, (module._forward_hooks_with_kwargs,
                                                   module._forward_hooks_always_called)),
                          (module._forward_pre_hooks, (module._forward_pre_hooks_with_kwargs,))):
        for key in [k for k, f in hooks.items() if f is function]:
            del hooks[key]
            for extra in extras:
                extra.pop(key, None)
            found = True
    return found


def unconvert_dfa(model: nn.Module) -> None:
    """Detach what :func:`convert_dfa` attached to ``model``, in place: every point and the
    output op with their hooks, the norm fold, and the converted model's pre-hook. DFA
    modules placed by hand (no convert hook carries them) stay, for the caller to refuse."""
    for module in list(model.modules()):  # children are removed on the way
        for name, (cls, hooks) in _ATTACHED.items():
            child = module._modules.get(name)
            if not isinstance(child, cls):
                continue
            if any([_remove_hooks(module, h) for h in hooks]):  # a list: remove every one
                del module._modules[name]
                module.__dict__.pop("_dfa_token_dims", None)
                module.__dict__.pop("_dfa_fold_slot", None)
        remove_fold(module, _remove_hooks)
    if _remove_hooks(model, _new_forward):
        model.__dict__.pop("_dfa_output_path", None)
