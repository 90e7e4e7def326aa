"""fastcredit: credit assignment beyond backpropagation, as fast drop-in PyTorch layers."""

from __future__ import annotations

import torch


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


_REBUILD = (
    "Build it against the torch release you run: `pip install --no-build-isolation .` in its "
    "source tree (sdist or checkout; `-e .` for development)"
)
try:
    # Written with the extension by setup.py, and read before _C: under another torch release
    # _C may fail to load with an undefined symbol that names neither release, or load and
    # misbehave.
    from ._build_info import TORCH_VERSION as _BUILT_TORCH_VERSION
except ImportError as error:
    raise ImportError(f"fastcredit's extension is not built ({error}). {_REBUILD}.") from error
if _major_minor(_BUILT_TORCH_VERSION) != _major_minor(torch.__version__):
    raise ImportError(
        f"fastcredit was built against torch {_BUILT_TORCH_VERSION} but torch "
        f"{torch.__version__} is installed. {_REBUILD}, or install "
        f"torch=={'.'.join(_major_minor(_BUILT_TORCH_VERSION))}.*"
    )
try:
    from . import _C  # loading the extension registers the torch.ops.fastcredit ops
except ImportError as error:
    raise ImportError(
        f"fastcredit's compiled extension failed to load under torch {torch.__version__} "
        f"({error}). {_REBUILD}."
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
