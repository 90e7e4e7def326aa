"""A switch every fastcredit layer reads in its forward: inside ``backprop()`` the layers run
as ordinary autograd modules with the same parameters, so the true backprop gradients of a
converted model can be computed (diagnostics, tests) without copying it."""

from __future__ import annotations

import contextlib
import threading

_state = threading.local()


def backprop_active() -> bool:
    """True inside a ``backprop()`` block on this thread."""
    return getattr(_state, "backprop", False)


@contextlib.contextmanager
def backprop():
    """Run fastcredit layers with plain backpropagation inside the block."""
    previous = backprop_active()
    _state.backprop = True
    try:
        yield
    finally:
        _state.backprop = previous
