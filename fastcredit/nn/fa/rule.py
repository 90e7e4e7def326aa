"""Where a layer's feedback matrix B comes from, for FA, the sign-symmetric family and KP.

A layer's backward sends ``δ B`` instead of ``δ W`` to its input; B has W's shape
``[out, in, *kernel]`` and, for the seeded forms, entry (o, j) of W's ``[out, rest]`` view is
entry (o, j) of :func:`fastcredit.feedback_matrix`.

========  ====================================================  ==============================
method    B                                                     state
========  ====================================================  ==============================
bp        W                                                     none
fa        fixed random, ``scale * F(seed)``                     stored B, or only the seed
usf       ``scale * sign(W)``                                   none
frsf      ``|M| ⊙ sign(W)``, ``|M| = |scale * F(seed)|`` fixed  stored |M|, or only the seed
brsf      ``|M| ⊙ sign(W)``, |M| redrawn after every update      the seed and a draw counter
kp        stored, trained like W (:class:`fastcredit.optim.KolenPollack`)   stored B
========  ====================================================  ==============================

``scale`` defaults to the Xavier (Glorot) value for the distribution, so every B entry has
variance ``2 / (fan_in + fan_out)`` (fans as :func:`torch.nn.init.xavier_uniform_` counts
them): ``sqrt(6 / (fan_in + fan_out))`` for ``"uniform"`` / ``"uniform32"`` draws on [-1, 1),
``sqrt(2 / (fan_in + fan_out))`` for ``"normal"``, ``"normal32"`` and ``"rademacher"`` and for
uSF's sign.
sign(0) = 0: a zero weight sends no feedback, as under backprop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ... import ops
from ..._spec import DISTS, FEEDBACK_METHODS, UNIFORM_DISTS, check_choice

# How each method may keep its feedback; the first entry is the default. None: nothing to keep.
STORAGE = {
    "fa": ("stored", "seeded"),
    "frsf": ("stored", "seeded"),
    "brsf": ("seeded",),
    "kp": ("stored",),
    "usf": (None,),
    "bp": (None,),
}


def resolve_storage(method: str, feedback: str | None) -> str | None:
    """The storage a layer uses: ``feedback`` checked against ``method``, or its default."""
    check_choice("method", method, FEEDBACK_METHODS)
    allowed = STORAGE[method]
    if feedback is None:
        return allowed[0]
    if feedback not in allowed:
        if allowed == (None,):
            raise ValueError(
                f"method {method!r} keeps no feedback state; leave feedback=None, got {feedback!r}"
            )
        reason = {
            "brsf": "brsf redraws |M| from (seed, draw) after every update and never stores it",
            "kp": "kp trains B with the optimizer, so B must be stored",
        }.get(method, f"expected one of {allowed}")
        raise ValueError(f"method {method!r} cannot use feedback={feedback!r}: {reason}")
    return feedback


def fans(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight ``[out, in, *kernel]``, counted as torch's init does."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def default_scale(method: str, shape: torch.Size | tuple[int, ...], dist: str) -> float:
    """The Xavier scale: B entries (uSF's ``scale * sign W`` included) get variance
    ``2 / (fan_in + fan_out)``. Uniform draws on [-1, 1) have variance 1/3, normal and
    Rademacher draws and signs variance 1."""
    check_choice("dist", dist, DISTS)
    fan_in, fan_out = fans(shape)
    variance = 2.0 / max(fan_in + fan_out, 1)
    uniform_draws = dist in UNIFORM_DISTS and method != "usf"
    return math.sqrt(3.0 * variance if uniform_draws else variance)


@dataclass(frozen=True)
class FeedbackRule:
    """What one backward of a layer uses: the layer's method, storage, scale, distribution and
    seed, as host values. The tensors of the layer's feedback state are passed to
    :meth:`matrix` and :meth:`project`: ``stored`` (B for fa and kp, |M| for frsf) and brSF's
    ``draw`` counter (an int64 0-d CPU tensor the op reads itself: no host read of a device
    tensor, and under ``torch.compile`` a graph input rather than a constant)."""

    method: str
    storage: str | None
    scale: float
    dist: str
    seed: int  # unsigned 64-bit; 0 where unused

    def matrix(self, weight: torch.Tensor, stored: torch.Tensor | None,
               draw: torch.Tensor | None = None) -> torch.Tensor:
        """The effective B ``[out, in, *kernel]``. May return ``weight`` or ``stored``
        themselves."""
        method = self.method
        if method == "bp":
            return weight
        if method in ("fa", "kp") and self.storage == "stored":
            return stored
        if method == "fa":  # seeded: regenerated, transient
            rows = weight.shape[0]
            return ops.feedback_matrix(
                self.seed, rows, weight.numel() // rows if rows else 0, dist=self.dist,
                scale=self.scale, dtype=weight.dtype, device=weight.device,
            ).view(weight.shape)
        if method == "usf":
            return ops.sign_feedback(weight, "scalar", scale=self.scale)
        if method == "frsf" and self.storage == "stored":
            return ops.sign_feedback(weight, "stored", magnitude=stored)
        if method == "frsf":
            return ops.sign_feedback(weight, "seeded", scale=self.scale, seed=self.seed,
                                     dist=self.dist)
        return ops.sign_feedback(weight, "seeded_step", scale=self.scale, seed=self.seed,
                                 step=draw, dist=self.dist)

    def project(self, grad: torch.Tensor, weight: torch.Tensor, stored: torch.Tensor | None,
                draw: torch.Tensor | None = None) -> torch.Tensor:
        """``grad [N, out] @ B [out, in]`` for a Linear layer. Seeded FA multiplies through
        :func:`fastcredit.seeded_project`, which never holds B whole; every other method
        builds B (:meth:`matrix`) and calls the GEMM."""
        if self.method == "fa" and self.storage == "seeded":
            return ops.seeded_project(grad, self.seed, weight.shape[1], dist=self.dist,
                                      scale=self.scale)
        return grad.mm(self.matrix(weight, stored, draw))
