"""fastcredit's layers: drop-in torch layers whose backward follows a learning rule."""

from .bottleneck import Bottleneck
from .dfa import DFAOutput, DFAPoint, dfa_points
from .dfa_linear import DFALinear
from .feedback_layers import Conv1d, Conv2d, Conv3d, FeedbackLayer, Linear
from .lra import LRA, LRALinear, LRAOutput
from .mode import backprop, backprop_active

__all__ = [
    "Bottleneck",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "DFALinear",
    "DFAOutput",
    "DFAPoint",
    "FeedbackLayer",
    "LRA",
    "LRALinear",
    "LRAOutput",
    "Linear",
    "backprop",
    "backprop_active",
    "dfa_points",
]
