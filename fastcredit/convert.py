"""``convert(model, method, **options)``: switch an existing model's credit assignment in one line.

The model is changed in place and returned; its report is the returned model's
``conversion_report`` attribute (a :class:`ConversionReport`). Nothing is printed.

* ``"fa"``, ``"usf"``, ``"frsf"``, ``"brsf"``, ``"kp"``, ``"bp"``: every ``nn.Linear``,
  ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Conv3d`` (exactly those types; subclasses such as
  the one inside ``nn.MultiheadAttention`` are used functionally by their owner) becomes the
  :mod:`fastcredit.nn` layer with the same hyperparameters, holding the *same* Parameter
  objects, so an optimizer built before the conversion still updates them. A layer carrying
  hooks (e.g. the old ``weight_norm``) is not replaced, as the hooks would be lost: it is
  listed as unsupported.
* ``"dfa"``: weight layers stay torch layers; a :class:`~fastcredit.nn.DFAPoint` is attached
  after every hidden block and a :class:`~fastcredit.nn.DFAOutput` to the output layer (both
  through forward hooks, as children of the module they follow, so no state-dict key moves).
  A *block boundary* is found from the module tree, in registration order:

  - an activation module that is a direct child of the root or of a container
    (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``, searched recursively);
  - a child of those that is neither a container nor an activation and holds weight layers
    (a residual block, a custom stage): its *output* is the boundary, so for a ResNet each
    residual block (after its skip addition and final activation) is one DFA block, and the
    layers inside it, the shortcut included, are trained by ordinary autograd from the
    feedback its point receives. Cutting inside a residual block would send feedback to its
    first half while its skip path still carried the gradient, mixing two rules.

  Boundaries with no weight layer after them are ignored. The output block (everything after
  the last boundary) must hold exactly one Linear/Conv layer, the head, whose output the
  :class:`~fastcredit.nn.DFAOutput` follows; ``num_outputs`` defaults to the head's
  ``out_features``. A boundary module called twice in one forward raises at that call.
* ``"lra"``: the model must be an ``nn.Sequential`` MLP: an optional leading ``nn.Flatten``,
  then ``nn.Linear`` layers, each hidden one followed by at most one activation module
  (Tanh, Sigmoid, ReLU, ReLU6, LeakyReLU, GELU, Softplus with default arguments, Identity)
  and the last one producing the logits of a softmax cross-entropy loss. Each hidden Linear
  becomes an :class:`~fastcredit.nn.LRALinear` with its activation (the activation's slot
  becomes ``nn.Identity``, keeping every index), the last an :class:`~fastcredit.nn.LRAOutput`;
  W and b are reused and E is drawn as the layers draw it. Anything else raises ValueError.

``copy=True`` converts a deep copy and returns it, leaving ``model`` untouched.
"""

from __future__ import annotations

import copy as copy_module
import itertools
from dataclasses import dataclass, field

import torch
from torch import nn

from .feedback import METHODS as FEEDBACK_METHODS
from .nn import Conv1d as FcConv1d
from .nn import Conv2d as FcConv2d
from .nn import Conv3d as FcConv3d
from .nn import DFAOutput, DFAPoint, FeedbackLayer, LRALinear, LRAOutput
from .nn import Linear as FcLinear
from .nn.dfa import _derive_seed
from .nn.dfa_linear import DFALinear
from .nn.lra import _LRABlock

METHODS = FEEDBACK_METHODS + ("dfa", "lra")
_OPTIONS = {
    **{m: ("feedback", "seed", "feedback_scale", "feedback_dist") for m in FEEDBACK_METHODS},
    "dfa": ("num_outputs", "feedback", "normalization", "dist", "scale", "signal", "batch_dims",
            "seed", "spatial"),
    "lra": ("beta", "gamma", "error", "use_fprime", "refine_steps", "clip_direction",
            "clip_update", "feedback_std", "loss_reduction"),
}
_LAYERS = {nn.Linear: FcLinear, nn.Conv1d: FcConv1d, nn.Conv2d: FcConv2d, nn.Conv3d: FcConv3d}
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU,
                nn.SELU, nn.CELU, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Mish, nn.PReLU)
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
          nn.RMSNorm)
_FASTCREDIT = (FeedbackLayer, DFAPoint, DFAOutput, DFALinear, _LRABlock)


@dataclass(frozen=True)
class Entry:
    """One module in a :class:`ConversionReport`: its path in the model (``""`` for the root),
    its original type name, and what happened to it."""

    path: str
    kind: str
    note: str


@dataclass
class ConversionReport:
    """What :func:`convert` did, module by module.

    ``converted``: modules replaced or given a DFA point / output. ``unchanged``: modules
    kept as they are on purpose (parameter-free layers, normalisation, embeddings, DFA's
    in-block layers). ``unsupported``: modules with their own parameters that the method
    cannot reach: kept as they are, so their backward is plain backprop. ``blocks`` (DFA
    only): each point's path -> the paths of the modules with parameters in its block, and
    ``"output"`` -> the output block's.
    """

    method: str
    converted: list[Entry] = field(default_factory=list)
    unchanged: list[Entry] = field(default_factory=list)
    unsupported: list[Entry] = field(default_factory=list)
    blocks: dict[str, list[str]] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"fastcredit.convert(method={self.method!r})"]
        for title, entries in (("converted", self.converted), ("unchanged", self.unchanged),
                               ("unsupported", self.unsupported)):
            lines.append(f"{title} ({len(entries)}):")
            lines += [f"  {e.path or '(root)'}  {e.kind}: {e.note}" for e in entries]
        return "\n".join(lines)


def convert(model: nn.Module, method: str, *, copy: bool = False, **options) -> nn.Module:
    """Switch ``model`` to ``method``'s credit assignment; returns the model (the new root when
    the root itself is replaced, e.g. a bare ``nn.Linear``) with its report attached as
    ``conversion_report``. See the module docstring for what each method does.

    Options by method: fa/usf/frsf/brsf/kp/bp take the layers' ``feedback``, ``seed``,
    ``feedback_scale``, ``feedback_dist`` (with ``seed``, layer i gets a seed derived from
    (seed, i); without, each layer draws its own from torch's generator). dfa takes
    :class:`~fastcredit.nn.DFAOutput`'s ``num_outputs``, ``feedback``, ``normalization``,
    ``dist``, ``scale``, ``signal`` ("error" or "sign"), ``batch_dims``, ``seed`` and the
    points' ``spatial``. lra takes ``beta``, ``gamma``, ``error``, ``use_fprime``,
    ``refine_steps``, ``clip_direction``, ``clip_update``, ``feedback_std`` and the output's
    ``loss_reduction``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    unknown = sorted(set(options) - set(_OPTIONS[method]))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; expected some of "
                         f"{_OPTIONS[method]}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects an nn.Module, got {type(model).__name__}")
    if copy:
        model = copy_module.deepcopy(model)
    report = ConversionReport(method)
    if method == "dfa":
        _convert_dfa(model, report, options)
    elif method == "lra":
        _convert_lra(model, report, options)
    else:
        model = _convert_feedback_layers(model, method, report, options)
    model.conversion_report = report
    return model


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _swap_blocker(module: nn.Module) -> str | None:
    """Why a Linear/Conv cannot be replaced by another module object, or None."""
    hooks = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks,
             module._backward_pre_hooks)
    if any(hooks):
        return ("has hooks (e.g. the old weight_norm's) that a replacement would lose: kept "
                "as is, its backward is backprop's")
    if not isinstance(module.weight, nn.Parameter):
        return "its weight is not a Parameter: kept as is, its backward is backprop's"
    return None


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _kept_note(module: nn.Module) -> str | None:
    """Why a module is fine left as is, or None when it transports error through parameters
    that the method cannot reach."""
    if isinstance(module, _FASTCREDIT):
        return "already a fastcredit module"
    if isinstance(module, _NORMS):
        return "normalisation layer: backprop's local backward, as in the FA literature"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "lookup table: its input is indices, so it sends no error down"
    if isinstance(module, _ACTIVATIONS):
        return "activation (elementwise)"
    if not _owns_parameters(module):
        return "no parameters"
    return None


# ---- FA family ------------------------------------------------------------------------------
def _replacement(module: nn.Module, method: str, options: dict, index: int) -> nn.Module:
    weight = module.weight
    factory = {"device": weight.device, "dtype": weight.dtype}
    layer_options = {k: v for k, v in options.items() if k != "seed"}
    if "seed" in options:
        layer_options["seed"] = _derive_seed(options["seed"], index)
    if isinstance(module, nn.Linear):
        new = FcLinear(module.in_features, module.out_features, module.bias is not None,
                       method=method, **factory, **layer_options)
    else:
        new = _LAYERS[type(module)](
            module.in_channels, module.out_channels, module.kernel_size, module.stride,
            module.padding, module.dilation, module.groups, module.bias is not None,
            module.padding_mode, method=method, **factory, **layer_options)
    new.weight, new.bias = module.weight, module.bias  # the same Parameter objects
    new.train(module.training)
    new.record_weight_norm_()
    return new


def _convert_feedback_layers(model, method, report, options) -> nn.Module:
    if "seed" in options:
        _check_seed(options["seed"])
    new_of: dict[int, nn.Module] = {}  # shared modules are converted once

    def visit(module: nn.Module, path: str) -> nn.Module:
        kind = type(module).__name__
        if id(module) in new_of:
            return new_of[id(module)]
        blocker = _swap_blocker(module) if type(module) in _LAYERS else None
        if blocker is not None:
            report.unsupported.append(Entry(path, kind, blocker))
            return module
        if type(module) in _LAYERS:
            new = _replacement(module, method, options, len(new_of))
            new_of[id(module)] = new
            report.converted.append(Entry(path, kind, f"fastcredit.nn.{type(new).__name__}"
                                                      f"({new._feedback_repr()})"))
            return new
        note = _kept_note(module)
        if note is not None and (not module._modules or isinstance(module, _FASTCREDIT)):
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
                new_child = visit(child, _join(path, name))
                if new_child is not child:
                    setattr(module, name, new_child)
        return module

    return visit(model, "")


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be an int with 0 <= seed < 2**64, got {seed!r}")


# ---- DFA ------------------------------------------------------------------------------------
def _is_weight_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))


def _through_point(module: nn.Module, inputs, output):
    """Forward hook of a block boundary: the output goes through the module's DFA point."""
    point = module.dfa_point
    if torch.is_grad_enabled() and point.index in point.output._tape:
        raise RuntimeError(
            f"{type(module).__name__} carrying a DFA point ran twice in one forward: convert "
            "found it as a block boundary, but a module reused within a forward is not one; "
            "place fastcredit.nn.DFAPoint modules by hand for this model"
        )
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"a DFA block boundary must return a tensor, {type(module).__name__} "
                        f"returned {type(output).__name__}")
    return point(output)


def _through_output(module: nn.Module, inputs, output):
    """Forward hook of the head: its output goes through the DFA output op."""
    return module.dfa_output(output)


def _block_boundaries(model: nn.Module) -> list[tuple[str, nn.Module]]:
    found = []

    def scan(container: nn.Module, prefix: str) -> None:
        for name, child in container._modules.items():
            if child is None:
                continue
            path = _join(prefix, name)
            if isinstance(child, _CONTAINERS):
                scan(child, path)
            elif isinstance(child, _ACTIVATIONS) or (
                    not _is_weight_layer(child)
                    and any(_is_weight_layer(m) for m in child.modules())):
                found.append((path, child))

    if isinstance(model, _ACTIVATIONS) or _is_weight_layer(model):
        return found
    scan(model, "")
    return found


def _convert_dfa(model, report, options) -> None:
    if options.get("signal") == "target":
        raise ValueError("convert(method='dfa') cannot use signal='target': DRTP needs the labels "
                         "in the output call; build DFAOutput(..., signal='target') by hand")
    order = {id(m): i for i, (_, m) in enumerate(model.named_modules())}
    last_descendant = {id(module): max(order[id(m)] for m in module.modules())
                       for module in model.modules()}
    weight_layers = [(p, m) for p, m in model.named_modules() if _is_weight_layer(m)]
    if not weight_layers:
        raise ValueError("convert(method='dfa'): the model has no Linear or Conv layer")
    boundaries = [(p, m) for p, m in _block_boundaries(model)
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
    dfa_options = {k: v for k, v in options.items() if k not in ("num_outputs", "spatial")}
    num_outputs = options.get("num_outputs")
    if num_outputs is None:
        if not isinstance(head, nn.Linear):
            raise ValueError(f"convert(method='dfa'): the head {head_path!r} is a "
                             f"{type(head).__name__}; pass num_outputs")
        num_outputs = head.out_features
    point_options = {"spatial": options["spatial"]} if "spatial" in options else {}
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

    # The report: each boundary's block is every module with parameters registered after the
    # previous boundary's subtree and up to the end of its own.
    owners = [(p, m) for p, m in model.named_modules()
              if _owns_parameters(m) and not isinstance(m, _FASTCREDIT)]
    start = -1
    for path, module in boundaries:
        end = last_descendant[id(module)]
        report.blocks[path] = [p for p, m in owners if start < order[id(m)] <= end]
        start = end
        what = "activation" if isinstance(module, _ACTIVATIONS) else "block"
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
        if module._modules and not _owns_parameters(module):
            continue  # containers and blocks: their leaves are listed
        note = _kept_note(module)
        if path in in_block:
            note = f"trained within its DFA block by autograd ({note or type(module).__name__})"
        report.unchanged.append(Entry(path, type(module).__name__, note or "kept as is"))


# ---- LRA ------------------------------------------------------------------------------------
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


def _convert_lra(model, report, options) -> None:
    if not isinstance(model, nn.Sequential):
        raise ValueError(  # noqa: TRY004 - an unsupported architecture, as the checks below
            f"convert(method='lra') builds LRA blocks for an nn.Sequential MLP (Linear layers "
            f"with activation modules between them); got a {type(model).__name__}")
    items = [(name, m) for name, m in model._modules.items() if m is not None]
    bad = [(name, type(m).__name__) for i, (name, m) in enumerate(items)
           if not (type(m) is nn.Linear or _lra_activation(m) is not None
                   or (i == 0 and isinstance(m, nn.Flatten)))]
    if bad:
        raise ValueError(
            "convert(method='lra') needs a Sequential of Linear layers and activations (Tanh, "
            "Sigmoid, ReLU, ReLU6, LeakyReLU, GELU, default Softplus, Identity; an optional "
            f"leading Flatten); unsupported (index, type): {bad}")
    linears = [i for i, (_, m) in enumerate(items) if type(m) is nn.Linear]
    blocked = [(items[i][0], _swap_blocker(items[i][1])) for i in linears
               if _swap_blocker(items[i][1]) is not None]
    if blocked:
        raise ValueError(f"convert(method='lra') cannot replace {blocked}")
    if not linears or linears[-1] != len(items) - 1:
        raise ValueError("convert(method='lra'): the last module must be the Linear output "
                         "layer producing logits (LRAOutput assumes a softmax cross-entropy)")
    start = 1 if isinstance(items[0][1], nn.Flatten) else 0
    if linears[0] != start:
        raise ValueError("convert(method='lra'): the MLP must start with a Linear layer")
    for a, b in itertools.pairwise(linears):
        if b - a > 2:
            raise ValueError(f"convert(method='lra'): hidden layer {items[a][0]!r} is followed "
                             f"by {b - a - 1} activations; LRA blocks take one")
    hidden_keys = set(_OPTIONS["lra"]) - {"loss_reduction"}
    hidden_options = {k: v for k, v in options.items() if k in hidden_keys}
    output_options = {k: v for k, v in options.items() if k != "use_fprime" and k != "error"}
    if start:
        report.unchanged.append(Entry(items[0][0], "Flatten", "no parameters"))
    for a, b in zip(linears, linears[1:] + [None]):
        name, linear = items[a]
        factory = {"device": linear.weight.device, "dtype": linear.weight.dtype}
        bias = linear.bias is not None
        if b is None:
            block = LRAOutput(linear.in_features, linear.out_features, bias=bias,
                              weight_init="zero", **factory, **output_options)
        else:
            act_name, act = (items[a + 1] if b - a == 2 else (None, nn.Identity()))
            activation, slope = _lra_activation(act)
            block = LRALinear(linear.in_features, linear.out_features, activation, bias=bias,
                              negative_slope=slope, weight_init="zero", **factory,
                              **hidden_options)
            if act_name is not None:
                setattr(model, act_name, nn.Identity())
                report.converted.append(Entry(act_name, type(act).__name__,
                                              f"nn.Identity: folded into LRALinear {name!r}"))
        block.weight, block.bias = linear.weight, linear.bias  # the same Parameter objects
        block.train(linear.training)
        setattr(model, name, block)
        learnt_e = " (E is a new Parameter: build the optimizer after convert)" if (
            block.gamma > 0) else ""
        report.converted.append(Entry(name, "Linear", f"fastcredit.nn.{block!r}{learnt_e}"))
    report.converted.sort(key=lambda e: list(model._modules).index(e.path))
