"""A Launay-style bottleneck: a layer that may train only a fixed fraction of its entries."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ..._spec import check_seed


class _MaskGradient(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by a fixed 0/1 mask."""

    @staticmethod
    def forward(ctx, parameter, mask):
        ctx.save_for_backward(mask)
        return parameter.view_as(parameter)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


class Bottleneck(nn.Module):
    """Wraps ``module`` so that only a fixed random ``fraction`` of the entries of each of its
    trainable parameters receive gradient; the others keep their initial values under any
    optimizer without weight decay.

    This is how Launay et al. 2019 ("Principled training of neural networks with direct
    feedback alignment") emulate a narrow layer of "b neurons" inside an 800-wide one:
    ``fraction = b / 800``, the layer's width and forward values unchanged, its degrees of
    freedom cut. Each parameter keeps
    ``round(fraction * numel)`` entries (at least one), chosen by ``seed``; the masks are
    buffers (``mask_<parameter name>``), so ``state_dict()`` round-trips. Unlike the
    reference code, which also masked the gradient flowing to the layer's input, only the
    parameters are restricted: under DFA no gradient flows to a block's input.

    ``module``'s forward is called with the same arguments, through
    ``torch.func.functional_call``.
    """

    def __init__(self, module: nn.Module, fraction: float, *, seed: int = 0):
        super().__init__()
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.module = module
        self.fraction = float(fraction)
        check_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        self._masked: dict[str, str] = {}
        for name, parameter in module.named_parameters():
            if not parameter.requires_grad:
                continue
            keep = max(1, round(self.fraction * parameter.numel()))
            mask = torch.zeros(parameter.numel(), dtype=torch.bool)
            mask[torch.randperm(parameter.numel(), generator=generator)[:keep]] = True
            buffer = "mask_" + name.replace(".", "_")
            self.register_buffer(buffer, mask.view(parameter.shape).to(parameter.device))
            self._masked[name] = buffer

    def trainable_entries(self) -> dict[str, int]:
        """Number of entries each masked parameter may still train."""
        return {name: int(getattr(self, buffer).sum()) for name, buffer in self._masked.items()}

    def forward(self, *args, **kwargs):
        parameters = {
            name: _MaskGradient.apply(parameter, getattr(self, self._masked[name]))
            for name, parameter in self.module.named_parameters()
            if name in self._masked
        }
        return functional_call(self.module, parameters, args, kwargs)

    def extra_repr(self) -> str:
        return f"fraction={self.fraction:.4g}"


