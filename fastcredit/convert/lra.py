"""``convert`` for LRA-E: an ``nn.Sequential`` MLP becomes LRA blocks holding the same
Parameters."""

from __future__ import annotations

import itertools

from torch import nn

from ..nn import LRALinear, LRAOutput
from ._common import Entry, swap_blocker

OPTIONS = ("beta", "gamma", "error", "use_fprime", "refine_steps", "clip_direction",
           "clip_update", "feedback_std", "loss_reduction")


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


def convert_lra(model, report, options) -> None:
    """Replace an MLP's layers by LRA blocks (see :func:`fastcredit.convert`)."""
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
    blocked = [(items[i][0], swap_blocker(items[i][1])) for i in linears
               if swap_blocker(items[i][1]) is not None]
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
    hidden_keys = set(OPTIONS) - {"loss_reduction"}
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
