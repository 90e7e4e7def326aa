"""Deprecated home of the FA family's feedback rule: :mod:`fastcredit.nn.fa.rule` (and the
method names in :data:`fastcredit._spec.FEEDBACK_METHODS`)."""

import warnings

from ._spec import FEEDBACK_METHODS as METHODS
from .nn.fa.rule import STORAGE, FeedbackRule, default_scale, fans, resolve_storage

warnings.warn("fastcredit.feedback moved to fastcredit.nn.fa.rule; the old name will go",
              DeprecationWarning, stacklevel=2)

__all__ = ["METHODS", "STORAGE", "FeedbackRule", "default_scale", "fans", "resolve_storage"]
