"""fastcredit's layers: drop-in torch layers whose backward follows a learning rule.

``fa``: FA, uSF, frSF, brSF and KP Linear/Conv layers. ``dfa``: DFA points, output and fused
blocks. ``lra``: LRA-E blocks. ``mode.backprop()``: run any of them as plain autograd.
"""

from .dfa import Bottleneck, DFALinear, DFAOutput, DFAPoint, dfa_points
from .fa import Conv1d, Conv2d, Conv3d, FeedbackLayer, Linear
from .lra import LRA, LRABlock, LRAConv1d, LRAConv2d, LRAConv3d, LRALinear, LRAOutput
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
    "LRABlock",
    "LRAConv1d",
    "LRAConv2d",
    "LRAConv3d",
    "LRALinear",
    "LRAOutput",
    "Linear",
    "backprop",
    "backprop_active",
    "dfa_points",
]
