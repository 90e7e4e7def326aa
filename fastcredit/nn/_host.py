"""Host copies of small buffers (seeds, feature counts) that a layer needs as Python numbers.

A buffer is what ``state_dict()``, ``.to()`` and DDP's broadcast see; reading it in every
forward would synchronise with the device. So its value is cached with the tensor's identity
and version counter (every in-place write, ``load_state_dict`` and DDP's broadcast included,
bumps the version; ``.to()`` makes a new tensor) and re-read only when either changed.
Under ``torch.compile`` the cache is read as is: the traced graph specialises on the value
and recompiles only if an eager call later refreshed it to another one.
"""

from __future__ import annotations

import torch
from torch import nn


def host_value(module: nn.Module, name: str):
    """Buffer ``name`` of ``module`` as Python numbers (``tolist()``), cached as above."""
    cache = module._host_cache
    if torch.compiler.is_compiling():
        return cache[name][1]
    tensor = getattr(module, name)
    key = (id(tensor), tensor._version)
    hit = cache.get(name)
    if hit is None or hit[0] != key:
        hit = (key, tensor.tolist())
        cache[name] = hit
    return hit[1]
