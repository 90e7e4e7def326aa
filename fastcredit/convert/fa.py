"""``convert`` for the FA family: swap each weight layer for the fastcredit layer holding the
same Parameters, and ``unconvert``, its inverse."""

from __future__ import annotations

import torch
from torch import nn

from .. import nn as fnn
from .._spec import check_seed, derive_seed
from ._common import FASTCREDIT, Entry, join, kept_note, owns_parameters, swap_blocker

OPTIONS = ("feedback", "seed", "feedback_scale", "feedback_dist")

# torch type -> (fastcredit type, the constructor arguments read from a module of that type)
_CONV = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
         "groups", "bias", "padding_mode")
_CONV_T = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "output_padding",
           "groups", "bias", "dilation", "padding_mode")
_RNN = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
        "bidirectional")
LAYERS = {
    nn.Linear: (fnn.Linear, ("in_features", "out_features", "bias")),
    nn.Conv1d: (fnn.Conv1d, _CONV), nn.Conv2d: (fnn.Conv2d, _CONV),
    nn.Conv3d: (fnn.Conv3d, _CONV),
    nn.ConvTranspose1d: (fnn.ConvTranspose1d, _CONV_T),
    nn.ConvTranspose2d: (fnn.ConvTranspose2d, _CONV_T),
    nn.ConvTranspose3d: (fnn.ConvTranspose3d, _CONV_T),
    nn.MultiheadAttention: (fnn.MultiheadAttention, (
        "embed_dim", "num_heads", "dropout", "bias", "add_bias_kv", "add_zero_attn", "kdim",
        "vdim", "batch_first")),
    nn.RNN: (fnn.RNN, ("input_size", "hidden_size", "num_layers", "nonlinearity", "bias",
                       "batch_first", "dropout", "bidirectional")),
    nn.LSTM: (fnn.LSTM, (*_RNN, "proj_size")),
    nn.GRU: (fnn.GRU, _RNN),
}


def _argument(module: nn.Module, name: str):
    if name == "bias":  # a flag on RNNs, a Parameter (or None) elsewhere
        if isinstance(module, nn.MultiheadAttention):
            return module.in_proj_bias is not None or module.out_proj.bias is not None
        if isinstance(module, nn.RNNBase):
            return module.bias
        return module.bias is not None
    if name == "add_bias_kv":
        return module.bias_k is not None
    return getattr(module, name)


def is_transformers_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a transformers ``Conv1D`` (GPT-2 family), told without importing
    transformers: the class name, ``nf``, a Parameter weight ``[nx, nf]``, a bias ``[nf]`` or
    None, no children, and the forward contract ``y = x W + b`` checked on two random rows."""
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    if not (type(module).__name__ == "Conv1D" and isinstance(weight, nn.Parameter)
            and weight.dim() == 2 and getattr(module, "nf", None) == weight.shape[1]
            and (bias is None or (isinstance(bias, torch.Tensor)
                                  and bias.shape == (weight.shape[1],)))
            and not module._modules and weight.device.type != "meta"):
        return False
    with torch.no_grad():
        x = torch.randn(2, weight.shape[0], dtype=weight.dtype, device=weight.device)
        expected = x @ weight + (0 if bias is None else bias)
        try:
            got = module(x)
        except Exception:  # noqa: BLE001 - any failure means the contract does not hold
            return False
        return (isinstance(got, torch.Tensor) and got.shape == expected.shape
                and torch.allclose(got, expected, rtol=1e-3, atol=1e-5))


def share_parameters(new: nn.Module, old: nn.Module) -> None:
    """Give ``new`` the Parameter objects of ``old`` under the same names."""
    ours = dict(new.named_parameters(remove_duplicate=False))
    theirs = dict(old.named_parameters(remove_duplicate=False))
    if set(ours) != set(theirs):
        raise RuntimeError(f"{type(new).__name__} and {type(old).__name__} name their "
                           f"parameters differently: {sorted(set(ours) ^ set(theirs))}")
    for name, param in theirs.items():
        owner, _, leaf = name.rpartition(".")
        setattr(new.get_submodule(owner), leaf, param)
    for name in ("in_proj_bias", "bias_k", "bias_v"):  # None-valued parameters stay None
        if hasattr(old, name) and getattr(old, name) is None:
            setattr(new, name, None)


def _replacement(module: nn.Module, method: str, options: dict, index: int) -> nn.Module:
    weight = next(module.parameters())
    factory = {"device": weight.device, "dtype": weight.dtype}
    layer_options = {k: v for k, v in options.items() if k != "seed"}
    if "seed" in options:
        layer_options["seed"] = derive_seed(options["seed"], index)
    if is_transformers_conv1d(module):
        new = fnn.Conv1D(module.nf, module.weight.shape[0], method=method, **factory,
                         **layer_options)
        new._plain_type = type(module)  # for unconvert
    else:
        cls, arguments = LAYERS[type(module)]
        new = cls(*(_argument(module, a) for a in arguments), method=method, **factory,
                  **layer_options)
    share_parameters(new, module)
    new.train(module.training)
    for layer in new.modules():
        if isinstance(layer, fnn.FeedbackLayer):
            layer.record_weight_norm_()
    return new


def _swappable(module: nn.Module) -> bool:
    return type(module) in LAYERS or is_transformers_conv1d(module)


def convert_feedback_layers(model, method, report, options) -> nn.Module:
    """Replace every weight layer of ``model`` (see :func:`fastcredit.convert`)."""
    if "seed" in options:
        check_seed(options["seed"])
    new_of: dict[int, nn.Module] = {}  # shared modules are converted once

    def visit(module: nn.Module, path: str) -> nn.Module:
        kind = type(module).__name__
        if id(module) in new_of:
            return new_of[id(module)]
        swappable = not isinstance(module, FASTCREDIT) and _swappable(module)
        blocker = swap_blocker(module) if swappable else None
        if blocker is not None:
            report.unsupported.append(Entry(path, kind, blocker))
            return module
        if swappable:
            new = _replacement(module, method, options, len(new_of))
            new_of[id(module)] = new
            report.converted.append(Entry(path, kind, f"fastcredit.nn.{type(new).__name__}"
                                                      f"(method={method!r})"))
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
        if note is not None and owns_parameters(module):  # ViT's embeddings: tokens + a conv
            report.unchanged.append(Entry(path, kind, note))  # after its children: counted last
        return module

    return visit(model, "")


_PLAIN = {fast: plain for plain, (fast, _) in LAYERS.items()}
# Every FA-family layer (those with several weight matrices are not FeedbackLayers).
FEEDBACK_LAYERS = (fnn.FeedbackLayer, *_PLAIN)


def plain_of(module: nn.Module) -> nn.Module | None:
    """The torch (or transformers) module equal to the fastcredit ``module``, holding its
    Parameters, or None when ``module`` is not an FA-family layer."""
    if isinstance(module, fnn.Conv1D):
        cls = getattr(module, "_plain_type", None)
        if cls is None:
            raise ValueError("unconvert: this Conv1D was not made by convert from a "
                             "transformers Conv1D, so its plain class is unknown")
        with torch.device("meta"):
            plain = cls(module.nf, module.nx)
    elif type(module) in _PLAIN:
        cls = _PLAIN[type(module)]
        _, arguments = LAYERS[cls]
        with torch.device("meta"):
            plain = cls(*(_argument(module, a) for a in arguments))
    else:
        return None
    share_parameters(plain, module)
    if isinstance(plain, nn.RNNBase):
        plain._init_flat_weights()
    plain.train(module.training)
    return plain
