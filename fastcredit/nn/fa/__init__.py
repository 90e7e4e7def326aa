"""Feedback alignment, the sign-symmetric family (uSF, frSF, brSF) and Kolen-Pollack: layers
whose backward sends ``δ B`` to their input instead of ``δ W``.

``rule``: where B comes from for each method (storage, scale, the per-backward rule).
``state``: :class:`FeedbackLayer`, the feedback state every layer keeps, brSF's draw hook, and
:class:`WeightFeedback`, one weight matrix's state for modules that use several.
``functions``: the autograd Functions. ``layers``: the drop-in Linear, Conv, ConvTranspose and
transformers-style Conv1D layers. ``attention``: ``MultiheadAttention``. ``recurrent``:
``RNN``, ``LSTM``, ``GRU``.
"""

from .attention import MultiheadAttention
from .layers import (
    Conv1d,
    Conv1D,
    Conv2d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    Linear,
)
from .recurrent import GRU, LSTM, RNN
from .rule import STORAGE, FeedbackRule, default_scale, fans, resolve_storage
from .state import FeedbackLayer, WeightFeedback

__all__ = ["GRU", "LSTM", "RNN", "STORAGE", "Conv1D", "Conv1d", "Conv2d", "Conv3d",
           "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "FeedbackLayer",
           "FeedbackRule", "Linear", "MultiheadAttention", "WeightFeedback", "default_scale",
           "fans", "resolve_storage"]
