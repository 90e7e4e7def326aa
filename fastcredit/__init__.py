"""fastcredit: credit assignment beyond backpropagation, as fast drop-in PyTorch layers.

``import fastcredit`` loads the library only: the ops, :mod:`fastcredit.nn`, ``convert``,
``diagnostics`` and ``optim``. The oracle (:mod:`fastcredit.reference`) and the command-line
application (:mod:`fastcredit.app`) are imported on first use.
"""

from __future__ import annotations

import importlib
import warnings

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
except ImportError as error:  # kept for build_info() and cuda_kernels_available()
    _cuda_import_error: ImportError | None = error
else:
    _cuda_import_error = None

from . import diagnostics, nn, ops, optim  # noqa: E402
from .convert import ConversionReport, convert, unconvert  # noqa: E402
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


# Modules reached as attributes but imported only on first use; the app's old homes warn.
_LAZY = {"reference": "fastcredit.reference", "app": "fastcredit.app",
         "distributed": "fastcredit.distributed"}
_MOVED = {name: f"fastcredit.app.{name}" for name in ("bench", "cli", "data", "reproduce", "train")}


def __getattr__(name: str):
    if name in _MOVED:
        warnings.warn(f"fastcredit.{name} moved to {_MOVED[name]}; the old name will go",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(_MOVED[name])
    if name in _LAZY:
        return importlib.import_module(_LAZY[name])
    raise AttributeError(f"module 'fastcredit' has no attribute {name!r}")


__all__ = [
    "ConversionReport",
    "__version__",
    "build_info",
    "convert",
    "cuda_kernels_available",
    "dfa_backward_epilogue",
    "diagnostics",
    "feedback_fill_",
    "feedback_matrix",
    "lra_error",
    "nn",
    "ops",
    "optim",
    "seeded_project",
    "sign_feedback",
    "unconvert",
]
