"""fastcredit: credit assignment beyond backpropagation, as fast drop-in PyTorch layers."""

from __future__ import annotations

import warnings

import torch

try:
    from . import _C  # loading the extension registers the torch.ops.fastcredit ops
except ImportError as error:
    raise ImportError(
        f"fastcredit's compiled extension failed to load under torch {torch.__version__} "
        f"({error}). It must be built against the torch you run: "
        "`pip install --no-build-isolation -e .`"
    ) from error
from ._version import __version__

try:
    from . import _C_cuda  # noqa: F401 - registers the CUDA kernels; absent in CPU builds
except ImportError as error:  # noqa: F841 - kept for cuda_kernels_status()
    _cuda_import_error: ImportError | None = error
else:
    _cuda_import_error = None

from . import data, diagnostics, feedback, nn, ops, optim, reference  # noqa: E402
from .convert import ConversionReport, convert  # noqa: E402
from .ops import (  # noqa: E402
    feedback_fill_,
    feedback_matrix,
    lra_error,
    seeded_project,
    sign_feedback,
    dfa_backward_epilogue,
)


def cuda_kernels_available() -> bool:
    """True when fastcredit's CUDA kernels are loaded and registered with the dispatcher."""
    return _cuda_import_error is None


def build_info() -> dict:
    """How this fastcredit was built, and what loaded at run time."""
    info = dict(_C.build_info())
    info["torch_runtime_version"] = torch.__version__
    info["cuda_kernels_loaded"] = cuda_kernels_available()
    if info["with_cuda"] and _cuda_import_error is not None:
        info["cuda_kernels_error"] = str(_cuda_import_error)
    return info


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


if _major_minor(_C.build_info()["torch_version"]) != _major_minor(torch.__version__):
    warnings.warn(
        f"fastcredit was built against torch {_C.build_info()['torch_version']} but is running "
        f"under torch {torch.__version__}; its compiled ops may crash or misbehave. Rebuild "
        "with `pip install --no-build-isolation -e .` under the torch you use.",
        RuntimeWarning,
        stacklevel=2,
    )

__all__ = [
    "ConversionReport",
    "__version__",
    "build_info",
    "convert",
    "cuda_kernels_available",
    "data",
    "dfa_backward_epilogue",
    "diagnostics",
    "feedback",
    "feedback_fill_",
    "feedback_matrix",
    "lra_error",
    "nn",
    "ops",
    "optim",
    "reference",
    "seeded_project",
    "sign_feedback",
]
