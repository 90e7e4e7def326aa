"""Drop-in Linear, Conv, ConvTranspose and Conv1D (transformers' GPT-2 layout) layers whose
backward uses a feedback matrix B instead of W.

Forward is the ordinary layer. Backward sends ``δ B`` (the transposed convolution with B for
conv layers) to the input, and the true local gradients ``δᵀ x`` and ``Σ δ`` to the weight and
bias, so ``loss.backward()`` and any optimizer work unchanged. Methods and their B are listed
in :mod:`fastcredit.nn.fa.rule`; the state each layer keeps in :mod:`fastcredit.nn.fa.state`.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ..._spec import FEEDBACK_METHODS
from ..amp import apply_autocast
from ..mode import backprop_active
from .functions import _ConvFunction
from .state import FeedbackLayer


_METHOD_DOC = """
    method: one of {methods}: how the input gradient is formed (see fastcredit.nn.fa.rule).
    feedback: "stored" or "seeded" for fa and frsf (default "stored"; "seeded" keeps only the
        seed and regenerates B or |M| in each backward); brsf is always "seeded", kp "stored",
        usf and bp take None.
    seed: seed of B / |M| (0 <= seed < 2**64); drawn from torch's generator when None.
    feedback_scale: scale of the drawn values (default: Xavier, see fastcredit.feedback).
    feedback_dist: "uniform" (default), "normal" or "rademacher" draws of F (fa, frsf, brsf, kp);
        "uniform32" / "normal32" generate them in float32 for GPUs with slow FP64.
""".format(methods=FEEDBACK_METHODS)


class Linear(FeedbackLayer, nn.Linear):
    __doc__ = """``y = x Wᵀ + b`` for ``x [*, in_features]``, ``y [*, out_features]``; the
    backward gives ``x`` the gradient ``δ B`` and W, b their true gradients.

    Arguments as :class:`torch.nn.Linear`, plus (keyword-only):""" + _METHOD_DOC

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype=None, *, method: str = "fa", feedback: str | None = None,
                 seed: int | None = None, feedback_scale: float | None = None,
                 feedback_dist: str | None = None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_feedback(method, feedback, seed, feedback_scale, feedback_dist)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._feedback_repr()}"


class _ConvNd(FeedbackLayer):
    """The part shared by Conv1d/2d/3d; ``_spatial`` is the number of spatial dims."""

    _spatial: int

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None, *, method: str = "fa", feedback: str | None = None,
                 seed: int | None = None, feedback_scale: float | None = None,
                 feedback_dist: str | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device=device, dtype=dtype)
        self._init_feedback(method, feedback, seed, feedback_scale, feedback_dist)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.method == "bp" or backprop_active():
            return super().forward(x)
        d = self._spatial
        if x.dim() not in (d + 1, d + 2):
            raise ValueError(
                f"{type(self).__name__} expects a [N, C, *spatial] or [C, *spatial] input with "
                f"{d} spatial dims, got shape {tuple(x.shape)}"
            )
        unbatched = x.dim() == d + 1
        if unbatched:
            x = x.unsqueeze(0)
        padding = self.padding
        if self.padding_mode != "zeros" or isinstance(padding, str):
            # as torch's conv layers do: pad explicitly ('same' may need it asymmetric), then
            # convolve unpadded
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=mode)
            padding = (0,) * d
        out = apply_autocast(_ConvFunction, (x, self.weight, self.bias, self._stored_checked(),
                                             self._draw_or_none()),
                             self._rule(), list(self.stride), list(padding),
                             list(self.dilation), self.groups)
        return out.squeeze(0) if unbatched else out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._feedback_repr()}"


class Conv1d(_ConvNd, nn.Conv1d):
    __doc__ = """:class:`torch.nn.Conv1d` for ``x [N, C_in, L]`` or ``[C_in, L]``; the backward
    gives ``x`` the transposed convolution of δ with B and W, b their true gradients.

    Arguments as :class:`torch.nn.Conv1d`, plus (keyword-only):""" + _METHOD_DOC
    _spatial = 1


class Conv2d(_ConvNd, nn.Conv2d):
    __doc__ = """:class:`torch.nn.Conv2d` for ``x [N, C_in, H, W]`` or ``[C_in, H, W]``; the
    backward gives ``x`` the transposed convolution of δ with B and W, b their true gradients.

    Arguments as :class:`torch.nn.Conv2d`, plus (keyword-only):""" + _METHOD_DOC
    _spatial = 2


class Conv3d(_ConvNd, nn.Conv3d):
    __doc__ = """:class:`torch.nn.Conv3d` for ``x [N, C_in, D, H, W]`` or ``[C_in, D, H, W]``;
    the backward gives ``x`` the transposed convolution of δ with B and W, b their true
    gradients.

    Arguments as :class:`torch.nn.Conv3d`, plus (keyword-only):""" + _METHOD_DOC
    _spatial = 3


class _ConvTransposeNd(FeedbackLayer):
    """The part shared by ConvTranspose1d/2d/3d; ``_spatial`` is the number of spatial dims."""

    _spatial: int

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1,
                 padding_mode: str = "zeros", device=None, dtype=None, *, method: str = "fa",
                 feedback: str | None = None, seed: int | None = None,
                 feedback_scale: float | None = None,
                 feedback_dist: str | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding,
                         output_padding, groups, bias, dilation, padding_mode, device=device,
                         dtype=dtype)
        self._init_feedback(method, feedback, seed, feedback_scale, feedback_dist)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.method == "bp" or backprop_active():
            return super().forward(x, output_size)
        d = self._spatial
        if x.dim() not in (d + 1, d + 2):
            raise ValueError(
                f"{type(self).__name__} expects a [N, C, *spatial] or [C, *spatial] input with "
                f"{d} spatial dims, got shape {tuple(x.shape)}"
            )
        # torch's own check of padding_mode and output_size (it raises for the bad ones)
        output_padding = self._output_padding(x, output_size, self.stride, self.padding,
                                              self.kernel_size, d, self.dilation)
        unbatched = x.dim() == d + 1
        if unbatched:
            x = x.unsqueeze(0)
        out = apply_autocast(_ConvFunction, (x, self.weight, self.bias, self._stored_checked(),
                                             self._draw_or_none()),
                             self._rule(), list(self.stride), list(self.padding),
                             list(self.dilation), self.groups, True, list(output_padding))
        return out.squeeze(0) if unbatched else out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._feedback_repr()}"


_TRANSPOSE_DOC = """:class:`torch.nn.ConvTranspose{d}d` (W ``[C_in, C_out / groups, *kernel]``);
    the backward gives ``x`` the ordinary convolution of δ with B (W's shape) in place of W's,
    and W, b their true gradients. ``padding_mode`` must be "zeros", as in torch.

    Arguments as :class:`torch.nn.ConvTranspose{d}d`, plus (keyword-only):"""


class ConvTranspose1d(_ConvTransposeNd, nn.ConvTranspose1d):
    __doc__ = _TRANSPOSE_DOC.format(d=1) + _METHOD_DOC
    _spatial = 1


class ConvTranspose2d(_ConvTransposeNd, nn.ConvTranspose2d):
    __doc__ = _TRANSPOSE_DOC.format(d=2) + _METHOD_DOC
    _spatial = 2


class ConvTranspose3d(_ConvTransposeNd, nn.ConvTranspose3d):
    __doc__ = _TRANSPOSE_DOC.format(d=3) + _METHOD_DOC
    _spatial = 3


class Conv1D(FeedbackLayer):
    __doc__ = """The ``Conv1D`` of Hugging Face ``transformers`` (GPT-2 and its family): a
    linear layer with the weight laid out ``[nx, nf]`` (in, out): ``y = x W + b`` for
    ``x [*, nx]``, ``y [*, nf]``. The backward gives ``x`` the gradient ``δ Bᵀ`` and W, b their
    true gradients. B has W's shape; its seeded draws and ``feedback_matrix()ᵀ`` equal those
    of a :class:`Linear` ``(nx, nf)`` with the same seed, so the two layouts train alike.

    Arguments: ``nf`` (out features), ``nx`` (in features), in transformers' order; W is drawn
    from N(0, 0.02²) and b is zero as there. Plus (keyword-only):""" + _METHOD_DOC

    _transposed = True

    def __init__(self, nf: int, nx: int, device=None, dtype=None, *, method: str = "fa",
                 feedback: str | None = None, seed: int | None = None,
                 feedback_scale: float | None = None,
                 feedback_dist: str | None = None) -> None:
        super().__init__()
        self.nf, self.nx = nf, nx
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(nx, nf, **factory))
        self.bias = nn.Parameter(torch.empty(nf, **factory))
        self.reset_parameters()
        self._init_feedback(method, feedback, seed, feedback_scale, feedback_dist)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """transformers' initialisation: W ~ N(0, 0.02²), b = 0; then the feedback as for
        every fastcredit layer."""
        nn.init.normal_(self.weight, std=0.02)
        nn.init.zeros_(self.bias)
        if hasattr(self, "weight_norm_init"):
            self.reset_feedback()
            self.record_weight_norm_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.nx}, {self._feedback_repr()}"
