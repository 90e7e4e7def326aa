"""Autocast (AMP) for the layers whose forward is a custom autograd Function.

Autocast casts the operands of a linear or convolution to its lower-precision dtype inside
the op; a custom Function whose backward multiplies by W, B or E would then meet tensors of
two dtypes. So the operands are cast *before* the Function, differentiably (their gradients
come back in the original dtype, as for a plain torch layer under autocast), and the Function
runs with autocast off: forward, backward and the feedback matrices (built from the cast W,
in W's dtype) all use the compute dtype, while the GEMM and fused kernels accumulate in
float32.
"""

from __future__ import annotations

import torch


def apply_autocast(function: type[torch.autograd.Function], tensors: tuple, *rest):
    """``function.apply(*tensors, *rest)``; under autocast for the first tensor's device the
    floating ``tensors`` (float64 excepted, as autocast does) are cast to the autocast dtype
    first and the Function runs with autocast disabled."""
    if not torch._C._is_any_autocast_enabled():  # the common case, in one cheap call
        return function.apply(*tensors, *rest)
    device_type = tensors[0].device.type
    # Devices without autocast (meta) raise in is_autocast_enabled; the op reports the rest.
    if not (torch.amp.is_autocast_available(device_type)
            and torch.is_autocast_enabled(device_type)):
        return function.apply(*tensors, *rest)
    dtype = torch.get_autocast_dtype(device_type)
    cast = tuple(t.to(dtype) if t is not None and t.is_floating_point()
                 and t.dtype != torch.float64 else t for t in tensors)
    with torch.autocast(device_type, enabled=False):
        return function.apply(*cast, *rest)
