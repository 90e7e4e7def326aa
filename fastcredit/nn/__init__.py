"""fastcredit's layers: drop-in modules whose backward is a credit-assignment rule."""

from .lra import LRA, LRALinear, LRAOutput
from .mode import backprop, backprop_active

__all__ = [
    "LRA",
    "LRALinear",
    "LRAOutput",
    "backprop",
    "backprop_active",
]
