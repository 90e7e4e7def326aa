"""Feedback alignment, the sign-symmetric family (uSF, frSF, brSF) and Kolen-Pollack: layers
whose backward sends ``δ B`` to their input instead of ``δ W``.

``rule``: where B comes from for each method (storage, scale, the per-backward rule).
``layers``: the drop-in Linear and Conv layers that apply it.
"""

from .layers import Conv1d, Conv2d, Conv3d, FeedbackLayer, Linear
from .rule import STORAGE, FeedbackRule, default_scale, fans, resolve_storage

__all__ = ["STORAGE", "Conv1d", "Conv2d", "Conv3d", "FeedbackLayer", "FeedbackRule", "Linear",
           "default_scale", "fans", "resolve_storage"]
