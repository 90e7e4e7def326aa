"""The backends every op test runs on: one test body, each implementation.

reference      fastcredit.reference (pure PyTorch, the oracle)
cpu            the C++ CPU kernels
cuda_emulated  the CUDA kernels compiled as C++ and run on the CPU by the emulation header
               (fastcredit._C_emu, built with FASTCREDIT_EMULATE_CUDA=1)
cuda           the CUDA kernels on a real GPU (skipped: no machine here has one)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

import fastcredit
from fastcredit import ops, reference


@dataclass(frozen=True)
class Backend:
    name: str
    device: str
    feedback_fill_: Callable
    seeded_project: Callable
    # The emulator runs ~1000x slower than native code: tests shrink their shapes for it.
    slow: bool = False

    def feedback_matrix(self, seed, rows, cols, *, dist="uniform", scale=1.0, dtype=torch.float32):
        out = torch.empty((rows, cols), dtype=dtype, device=self.device)
        self.feedback_fill_(out, seed, dist=dist, scale=scale)
        return out


def _emulated_ops():
    """torch.ops.fastcredit_emu, or None when the emulated library was not built."""
    try:
        importlib.import_module("fastcredit._C_emu")
    except ImportError:
        return None
    return torch.ops.fastcredit_emu


def _emu_fill(out, seed, *, dist="uniform", scale=1.0):
    _emulated_ops().feedback_fill_(out, ops._seed_as_int64(seed), dist, float(scale))
    return out


def _emu_project(x, seed, cols, *, dist="uniform", scale=1.0, transpose=False):
    return _emulated_ops().seeded_project(
        x, ops._seed_as_int64(seed), cols, dist, float(scale), transpose
    )


BACKENDS = {
    "reference": Backend("reference", "cpu", reference.feedback_fill_, reference.seeded_project),
    "cpu": Backend("cpu", "cpu", ops.feedback_fill_, ops.seeded_project),
    "cuda_emulated": Backend("cuda_emulated", "cpu", _emu_fill, _emu_project, slow=True),
    "cuda": Backend("cuda", "cuda", ops.feedback_fill_, ops.seeded_project),
}


def skip_reason(name: str) -> str | None:
    if name == "cuda_emulated" and _emulated_ops() is None:
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
