"""fastcredit's layers: drop-in modules whose backward implements a learning rule."""

from .dfa import DFAOutput, DFAPoint, dfa_points
from .dfa_linear import DFALinear

__all__ = [
    "DFALinear",
    "DFAOutput",
    "DFAPoint",
    "dfa_points",
]
