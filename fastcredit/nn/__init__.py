"""fastcredit's layers: drop-in torch layers whose backward follows a learning rule.

``fa``: FA, uSF, frSF, brSF and KP Linear, Conv, ConvTranspose, Conv1D (transformers'),
MultiheadAttention and RNN/LSTM/GRU layers. ``dfa``: DFA points, output and fused
blocks. ``lra``: LRA-E blocks. ``mode.backprop()``: run any of them as plain autograd.
"""

from .dfa import Bottleneck, DFALinear, DFAOutput, DFAPoint, dfa_points
from .fa import (
    GRU,
    LSTM,
    RNN,
    Conv1d,
    Conv1D,
    Conv2d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    FeedbackLayer,
    Linear,
    MultiheadAttention,
    WeightFeedback,
)
from .lra import LRA, LRABlock, LRAConv1d, LRAConv2d, LRAConv3d, LRALinear, LRAOutput
from .mode import backprop, backprop_active

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Bottleneck",
    "Conv1D",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
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
    "MultiheadAttention",
    "WeightFeedback",
    "backprop",
    "backprop_active",
    "dfa_points",
]
