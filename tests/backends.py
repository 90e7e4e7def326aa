"""The backends every op test runs on: one test body, each implementation.

reference      fastcredit.reference (pure PyTorch, the oracle)
cpu            the C++ CPU kernels
cuda_emulated  the CUDA kernels compiled as C++ and run on the CPU by the emulation header
               (fastcredit._C_emu, built with FASTCREDIT_EMULATE_CUDA=1), called through the
               same Python wrappers as the real ops
cuda           the CUDA kernels on a real GPU (skipped: no machine here has one)

`backend.op(name)` is the function `fastcredit.ops.<name>` (or `reference.<name>`) running
on that backend; tests allocate on `backend.device`.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

import pytest
import torch

import fastcredit
from fastcredit import ops, reference


@functools.cache
def _emulated_library():
    """torch.ops.fastcredit_emu with its Python impls registered, or None when not built."""
    try:
        importlib.import_module("fastcredit._C_emu")
    except ImportError:
        return None
    ops.register_python_impls("fastcredit_emu")
    return torch.ops.fastcredit_emu


def emulated_kernels():
    """Route fastcredit.ops (and everything built on it) to the emulated CUDA kernels, within
    a ``with`` block on this thread; skips the test where they are not built."""
    reason = skip_reason("cuda_emulated")
    if reason:
        pytest.skip(reason)
    return ops.use_library("fastcredit_emu")


@dataclass(frozen=True)
class Backend:
    name: str
    device: str
    # The emulator runs ~1000x slower than native code: tests shrink their shapes for it.
    slow: bool = False

    def op(self, name: str):
        if self.name == "reference":
            return getattr(reference, name)
        function = getattr(ops, name)
        if self.name != "cuda_emulated":
            return function

        @functools.wraps(function)
        def emulated(*args, **kwargs):
            with emulated_kernels():
                return function(*args, **kwargs)

        return emulated

    def library(self):
        """The torch.ops namespace holding this backend's kernels (for opcheck)."""
        if self.name == "reference":
            raise ValueError("the reference backend has no op library")
        return _emulated_library() if self.name == "cuda_emulated" else torch.ops.fastcredit

    def feedback_matrix(self, seed, rows, cols, *, dist="uniform", scale=1.0, dtype=torch.float32):
        out = torch.empty((rows, cols), dtype=dtype, device=self.device)
        self.op("feedback_fill_")(out, seed, dist=dist, scale=scale)
        return out


BACKENDS = {
    "reference": Backend("reference", "cpu"),
    "cpu": Backend("cpu", "cpu"),
    "cuda_emulated": Backend("cuda_emulated", "cpu", slow=True),
    "cuda": Backend("cuda", "cuda"),
}


def skip_reason(name: str) -> str | None:
    if name == "cuda_emulated" and _emulated_library() is None:
        return "fastcredit._C_emu not built (build with FASTCREDIT_EMULATE_CUDA=1)"
    if name == "cuda":
        if not fastcredit.cuda_kernels_available():
            return "fastcredit built without CUDA kernels"
        if not torch.cuda.is_available():
            return "no CUDA device"
    return None


def get(name: str) -> Backend:
    reason = skip_reason(name)
    if reason:
        pytest.skip(reason)
    return BACKENDS[name]
