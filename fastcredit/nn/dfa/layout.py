"""How a tensor at a DFA point or output maps to a ``[rows, features]`` matrix, and how a
projected signal is spread back over the tensor's shape."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

def _resolve_dims(dims: Sequence[int], rank: int, what: str) -> tuple[int, ...]:
    resolved = []
    for dim in dims:
        if not -rank <= dim < rank:
            raise ValueError(f"{what}: batch dim {dim} is out of range for a {rank}-D tensor")
        resolved.append(dim % rank)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"{what}: batch_dims {tuple(dims)} name a dimension twice")
    return tuple(resolved)


_LAYOUTS: dict = {}  # (shape, batch dims, spatial) -> Layout
_LAYOUTS_KEPT = 1024  # cleared when full: shapes that vary every step must not grow it


@dataclass(frozen=True)
class Layout:
    """How a tensor maps to a [rows, features] matrix: batch-like dims become rows, the rest
    features. With ``positions > 1`` (spatially shared feedback) only the first feature dim
    is fed back and the signal is broadcast over the other ``positions`` entries."""

    shape: tuple[int, ...]
    batch_dims: tuple[int, ...]  # in the order that numbers the rows (row-major)
    rows: int
    features: int
    positions: int = 1

    @classmethod
    def of(cls, shape: torch.Size, batch_dims: Sequence[int], spatial: str, what: str) -> Layout:
        """The layout of a tensor of ``shape``; ValueError (naming ``what``) for batch dims
        out of range or repeated. Cached: a training loop meets a handful of shapes."""
        key = (tuple(shape), tuple(batch_dims), spatial)
        layout = _LAYOUTS.get(key)
        if layout is None:
            layout = cls._build(key[0], _resolve_dims(key[1], len(key[0]), what), spatial)
            if len(_LAYOUTS) >= _LAYOUTS_KEPT:
                _LAYOUTS.clear()
            _LAYOUTS[key] = layout
        return layout

    @classmethod
    def _build(cls, shape: tuple[int, ...], dims: tuple[int, ...], spatial: str) -> Layout:
        feature_sizes = [s for i, s in enumerate(shape) if i not in dims]
        rows = math.prod(shape[i] for i in dims)
        # Shared feedback applies where there are positions; plain features are dense.
        if spatial == "dense" or len(feature_sizes) < 2:
            return cls(shape, dims, rows, math.prod(feature_sizes))
        return cls(shape, dims, rows, feature_sizes[0], math.prod(feature_sizes[1:]))

    @property
    def _order(self) -> tuple[int, ...]:
        rest = tuple(i for i in range(len(self.shape)) if i not in self.batch_dims)
        return self.batch_dims + rest

    def to_rows(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (of this layout's shape) as [rows, features]; dense layouts only."""
        return t.permute(self._order).reshape(self.rows, self.features)

    def expand(self, p: torch.Tensor) -> torch.Tensor:
        """Feedback ``p [rows_out, features]`` spread over this layout's shape.

        When this tensor has ``k = rows / rows_out`` rows per output row (extra batch-like
        dims, e.g. tokens under a pooled output), each projection row is repeated over its
        k rows; spatially shared feedback is broadcast over the positions. Both divide by
        the square root of the copy count, so the expected squared norm of the signal stays
        that of one projection row (TinyDFA's rule for repeats)."""
        rows_out = p.shape[0]
        k = self.rows // rows_out if rows_out else 0
        if k == 1 and self.positions == 1 and self.batch_dims == (0,):  # [N, *features]
            return p.reshape(self.shape)  # a view of a contiguous p
        if k * self.positions > 1:
            p = p * (1.0 / math.sqrt(k * self.positions))
        order = self._order
        permuted = [self.shape[i] for i in order]
        p = p.unsqueeze(1).expand(rows_out, k, self.features)
        if self.positions == 1:
            g = p.reshape(permuted)
        else:
            nb = len(self.batch_dims)
            g = p.reshape(permuted[: nb + 1] + [1] * (len(permuted) - nb - 1)).expand(permuted)
        inverse = [order.index(i) for i in range(len(order))]
        return g.permute(inverse) if inverse != list(range(len(order))) else g


def rows_compatible(point_rows: int, output_rows: int) -> bool:
    """A point takes the output's rows or a whole multiple of them (repeats)."""
    if output_rows == 0:
        return point_rows == 0
    return point_rows >= output_rows and point_rows % output_rows == 0
