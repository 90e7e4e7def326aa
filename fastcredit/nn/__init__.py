"""fastcredit's layers: drop-in modules whose backward implements a learning rule."""

from .bottleneck import Bottleneck
from .dfa import DFAOutput, DFAPoint, dfa_points
from .dfa_linear import DFALinear

__all__ = [
    "Bottleneck",
    "DFALinear",
    "DFAOutput",
    "DFAPoint",
    "dfa_points",
]
