"""fastcredit's layers: drop-in torch layers whose backward follows a learning rule."""

from .feedback_layers import Conv1d, Conv2d, Conv3d, FeedbackLayer, Linear
from .lra import LRA, LRALinear, LRAOutput
from .mode import backprop, backprop_active

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "FeedbackLayer",
    "LRA",
    "LRALinear",
    "LRAOutput",
    "Linear",
    "backprop",
    "backprop_active",
]
