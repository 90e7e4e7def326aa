"""The DFA feedback point: marks a hidden block's output, cuts the graph after it, and
receives the projected output error in the backward pass."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.utils.checkpoint
from torch import nn

from ..._spec import check_choice
from ..mode import backprop_active

if TYPE_CHECKING:
    from .output import DFAOutput

SPATIAL_MODES = ("dense", "shared")
_NOT_ATTACHED = ("this DFAPoint is not attached to a DFAOutput: pass it in "
                 "DFAOutput(points=[...], num_outputs=...)")
_REENTRANT_FORWARD = torch.utils.checkpoint.CheckpointFunction.forward.__code__


def _in_reentrant_checkpoint() -> bool:
    """Whether the caller runs inside reentrant ``torch.utils.checkpoint``'s forward."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _REENTRANT_FORWARD:
            return True
        frame = frame.f_back
    return False


class DFAPoint(nn.Module):
    """Marks the output of a hidden block as a DFA feedback point.

    Forward returns its input ``h`` *detached* (same values, no graph), so the next block
    computes no gradient for its input; ``h`` itself is recorded for the current forward of
    the :class:`DFAOutput` this point was given to, which delivers ``e @ B_l`` to it in the
    backward pass. Nothing is recorded under ``torch.no_grad()`` or while a backward pass
    runs (non-reentrant activation checkpointing's recomputation: the first forward's record
    is the one fed back). In training mode inside a reentrant ``torch.utils.checkpoint`` it
    raises RuntimeError: that checkpoint never recomputes a block whose input carries no
    gradient, so the block could not be trained. Place it after the block's activation (and
    dropout / pooling / BN), just before the next weight layer, as Nøkland's, Launay's and
    TinyDFA's code do; that is where ``convert(model, "dfa")`` puts it by default.

    Args:
        batch_dims: dims of ``h`` that index rows (samples, tokens), listed in the order that
            numbers the rows (row-major); the other dims are the point's ``d_l`` features.
            Default: the output's ``batch_dims``. ``h`` may have k times as many rows as the
            output (e.g. tokens ``[N, T, D]`` with ``batch_dims=(0, 1)`` under a pooled
            ``[N, C]`` output): each output row's feedback is then repeated over its k rows
            and divided by sqrt(k). The output's rows must come first in that numbering (for
            a sequence-first ``[T, N, D]`` list ``(1, 0)``).
        spatial: ``"dense"`` (default): one feedback weight per feature entry, i.e. B_l is
            ``[C, C_l*H*W]`` for a ``[N, C_l, H, W]`` conv map, as the reference
            implementations do. ``"shared"``: B_l is ``[C, C_l]`` (the first non-batch dim);
            its projection is broadcast over the remaining (position) dims and divided by
            sqrt(number of positions), which keeps the expected squared norm of the signal
            equal to the dense option's when the entries of B_l have the same scale. A point
            whose tensor has no position dims (``[N, C_l]``) gets dense feedback.
        reuse: whether the point may run more than once in one forward (a block applied
            several times). True: every run is recorded and receives ``s @ B_l`` (the same
            B_l) at its own tensor. False (default): a second run before the output is
            reached means the forward that made the first run was abandoned (a probe
            ``net[:2](x)``, an exception before the head): that record, and every earlier
            one, is dropped.
    """

    def __init__(self, *, batch_dims: Sequence[int] | None = None, spatial: str = "dense",
                 reuse: bool = False) -> None:
        super().__init__()
        check_choice("spatial", spatial, SPATIAL_MODES)
        self.batch_dims = None if batch_dims is None else tuple(int(d) for d in batch_dims)
        self.spatial = spatial
        self.reuse = bool(reuse)
        # The owning DFAOutput is kept out of the module tree (no duplicate registration).
        self.__dict__["_owner"] = None
        self._index: int | None = None

    def _attach(self, owner: DFAOutput, index: int) -> None:
        """Called by ``owner``'s constructor: this point is its point number ``index``."""
        if self._owner is not None:
            raise ValueError(f"point {index} already belongs to another DFAOutput")
        self.__dict__["_owner"] = owner
        self._index = index

    @property
    def output(self) -> DFAOutput:
        """The :class:`DFAOutput` that feeds this point."""
        if self._owner is None:
            raise RuntimeError(_NOT_ATTACHED)
        return self._owner

    @property
    def index(self) -> int:
        """Position of this point in its output's ``points``."""
        if self._index is None:
            raise RuntimeError(_NOT_ATTACHED)
        return self._index

    @property
    def features(self) -> int | None:
        """``d_l``, the number of columns of B_l; None until the feedback geometry is known
        (the first forward that records every point, or ``set_feedback_matrix``)."""
        return self.output.features_of(self.index)

    def feedback_matrix(self, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The effective feedback matrix ``B_l [C, d_l]`` (normalisation included),
        materialised (a copy): the point receives ``signal @ B_l``."""
        return self.output.feedback_matrix(self.index, dtype=dtype)

    def set_feedback_(self, matrix: torch.Tensor) -> DFAPoint:
        """Use ``matrix [C, d_l]`` as this point's B_l from now on (the output's
        ``feedback="stored"`` only; ValueError otherwise or for a wrong shape). Returns the
        point."""
        self.output.set_feedback_(self.index, matrix)
        return self

    def set_feedback_matrix(self, matrix: torch.Tensor) -> None:
        """Deprecated: :meth:`set_feedback_` (same arguments; it returns the point and raises
        ValueError, as every fastcredit layer's does)."""
        self.output.set_feedback_matrix(self.index, matrix)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if backprop_active():  # the true gradient flows through (diagnostics)
            return h
        owner = self.output
        if (not torch.is_grad_enabled() and self.training
                and not torch.compiler.is_compiling() and _in_reentrant_checkpoint()):
            # its block's input carries no gradient: torch would never re-run it in backward
            raise RuntimeError(
                "a DFAPoint ran inside a reentrant torch.utils.checkpoint, which cannot train "
                "a DFA block (its input is the previous point's detached output, so the "
                "segment is never recomputed in the backward): use use_reentrant=False"
            )
        # A forward inside a backward pass is checkpointing's recomputation: not recorded.
        # (Compiled code is traced outside any backward; the query would break its graph.)
        if torch.is_grad_enabled() and (torch.compiler.is_compiling()
                                        or torch._C._current_graph_task_id() == -1):
            owner._record(self._index, h, self.reuse)
        return h.detach()

    def extra_repr(self) -> str:
        parts = [] if self._index is None else [f"index={self._index}"]
        if self.batch_dims is not None:
            parts.append(f"batch_dims={self.batch_dims}")
        if self.spatial != "dense":
            parts.append(f"spatial={self.spatial!r}")
        if self.reuse:
            parts.append("reuse=True")
        return ", ".join(parts)


def dfa_points(module: nn.Module) -> list[DFAPoint]:
    """Every :class:`DFAPoint` inside ``module``, in registration order."""
    return [m for m in module.modules() if isinstance(m, DFAPoint)]


def as_point(module: nn.Module) -> DFAPoint:
    """``module`` itself, or the DFAPoint in its ``point`` attribute (e.g. a DFALinear)."""
    if isinstance(module, DFAPoint):
        return module
    point = getattr(module, "point", None)
    if isinstance(point, DFAPoint):
        return point
    raise TypeError(f"expected a DFAPoint or a module with a DFAPoint `point`, got "
                    f"{type(module).__name__}")
