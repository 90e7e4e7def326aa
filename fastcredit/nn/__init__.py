"""fastcredit's layers: drop-in torch layers whose backward follows a learning rule."""

from .feedback_layers import Conv1d, Conv2d, Conv3d, FeedbackLayer, Linear

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "FeedbackLayer",
    "Linear",
]
