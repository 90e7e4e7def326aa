"""fastcredit's layers: drop-in modules whose backward is a credit-assignment rule."""

from .lra import LRA, LRALinear, LRAOutput

__all__ = [
    "LRA",
    "LRALinear",
    "LRAOutput",
]
