"""Drop-in Linear and Conv layers whose backward uses a feedback matrix B instead of W.

Forward is the ordinary layer. Backward sends ``δ B`` (the transposed convolution with B for
conv layers) to the input, and the true local gradients ``δᵀ x`` and ``Σ δ`` to the weight and
bias, so ``loss.backward()`` and any optimizer work unchanged. Methods and their B are listed
in :mod:`fastcredit.nn.fa.rule`. All feedback state is in ``state_dict()``:

``feedback_seed``       int64 buffer, the seed B or |M| is drawn from (all but usf, bp)
``feedback_weight``     buffer, B, for fa (stored) and kp
``feedback_magnitude``  buffer, |M|, for frsf (stored)
``feedback_step``       int64, brsf: the draw number, |M| = |scale * F(step_seed(seed, step))|.
                        It advances once after every ``torch.optim`` step that changed the
                        layer's weight (Liao et al. 2016 redraw per update), so micro-batches
                        accumulated into one update, and a layer applied twice in one forward,
                        share one draw. Kept on the CPU whatever the layer's device (it is
                        read by the op without a device synchronisation) and not a buffer
                        (``.to()`` and DDP's buffer broadcast leave it alone), but saved and
                        loaded under this key like one.
``weight_norm_init``    buffer, ‖W‖_F when the weight was initialised
                        (:func:`fastcredit.optim.constrain_weight_norm`)
"""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.optim.optimizer import register_optimizer_step_post_hook

from ... import ops
from ..._spec import (
    DISTS,
    FEEDBACK_METHODS,
    check_choice,
    check_seed,
    seed_as_int64,
    seed_from_int64,
)
from .._host import host_value
from ..amp import apply_autocast
from ..mode import backprop_active
from .rule import FeedbackRule, default_scale, resolve_storage

# brSF layers, for the optimizer hook that moves each to its next draw after an update.
_REDRAWN: weakref.WeakSet = weakref.WeakSet()


def _redraw_updated_layers(optimizer, args, kwargs) -> None:
    """Global post-step hook of every torch.optim optimizer: brSF layers whose weight this
    step changed move to their next draw. The weight's version counter tells whether it
    changed, so an optimizer step that skipped the weight (no gradient, GradScaler's inf
    check) draws nothing new, and a wrapper stepping an inner optimizer counts once."""
    if not _REDRAWN:
        return
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for layer in list(_REDRAWN):
        if id(layer.weight) in params:
            layer._redraw_if_updated()


register_optimizer_step_post_hook(_redraw_updated_layers)


class _LinearFunction(torch.autograd.Function):
    # transposed: W (and a stored B) are laid out [in, out] (transformers' Conv1D), y = x W + b
    @staticmethod
    def forward(ctx, x, weight, bias, stored, draw, rule, transposed=False):
        ctx.rule = rule
        ctx.transposed = transposed
        ctx.save_for_backward(x, weight, stored, draw)
        return F.linear(x, weight.t() if transposed else weight, bias)

    @staticmethod
    @once_differentiable  # the feedback path has no meaningful second derivative
    def backward(ctx, grad_out):
        x, weight, stored, draw = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        # rows spelled out: reshape(-1, 0) is ambiguous when a layer has 0 features
        rows = math.prod(grad_out.shape[:-1])
        grad = grad_out.reshape(rows, grad_out.shape[-1])
        grad_x = grad_w = grad_b = None
        if need_x:
            if ctx.transposed:  # the rule works on the [out, in] orientation
                weight = weight.t().contiguous()
                stored = None if stored is None else stored.t().contiguous()
            grad_x = ctx.rule.project(grad, weight, stored, draw).reshape(x.shape)
        if need_w:
            grad_w = grad.t().mm(x.reshape(rows, x.shape[-1]))
            if ctx.transposed:
                grad_w = grad_w.t()
        if need_b:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b, None, None, None, None


class _ConvFunction(torch.autograd.Function):
    # transposed: a ConvTranspose (W [in, out / groups, *kernel]); its input gradient is the
    # ordinary convolution of δ with B
    @staticmethod
    def forward(ctx, x, weight, bias, stored, draw, rule, stride, padding, dilation, groups,
                transposed=False, output_padding=None):
        ctx.rule = rule
        output_padding = [0] * len(stride) if output_padding is None else output_padding
        ctx.conv = (stride, padding, dilation, transposed, output_padding, groups)
        ctx.bias_sizes = None if bias is None else list(bias.shape)
        ctx.save_for_backward(x, weight, stored, draw)
        return torch.convolution(x, weight, bias, stride, padding, dilation, transposed,
                                 output_padding, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight, stored, draw = ctx.saved_tensors
        mask = list(ctx.needs_input_grad[:3])
        # The weight argument is read only for the input gradient; the weight gradient needs
        # only its shape. So B is built only when the input gradient is wanted, and freed here.
        kernel = ctx.rule.matrix(weight, stored, draw) if mask[0] else weight
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out, x, kernel, ctx.bias_sizes, *ctx.conv, mask,
        )
        return grad_x, grad_w, grad_b, *([None] * 9)


class FeedbackLayer(nn.Module):
    """Mixin of the fastcredit layers: the feedback state, its buffers and inspection.

    Subclasses call :meth:`_init_feedback` after the torch layer's ``__init__``.
    """

    method: str
    feedback: str | None
    # True where W is laid out [in, out] (transformers' Conv1D): the rule, the seeded draws
    # and feedback_matrix() work on Wᵀ, the [out, in] orientation of a Linear, while stored
    # B keeps W's layout (so KolenPollack's ``B.grad = W.grad`` holds).
    _transposed = False

    def _init_feedback(self, method: str, feedback: str | None, seed: int | None,
                       feedback_scale: float | None, feedback_dist: str | None) -> None:
        storage = resolve_storage(method, feedback)
        draws = method not in ("usf", "bp")
        if not draws and (seed is not None or feedback_dist is not None):
            raise ValueError(
                f"method {method!r} draws nothing at random; leave seed and feedback_dist None"
            )
        if method == "bp" and feedback_scale is not None:
            raise ValueError("method 'bp' feeds back W itself; leave feedback_scale None")
        feedback_dist = "uniform" if feedback_dist is None else feedback_dist
        check_choice("feedback_dist", feedback_dist, DISTS)
        if feedback_scale is None:
            feedback_scale = default_scale(method, self.weight.shape, feedback_dist)
        elif not (math.isfinite(feedback_scale) and feedback_scale > 0):
            raise ValueError(f"feedback_scale must be finite and positive, got {feedback_scale}")
        self.method = method
        self.feedback = storage
        self.feedback_dist = feedback_dist
        self.feedback_scale = float(feedback_scale)
        self._host_cache: dict = {}
        device = self.weight.device
        if draws:
            if seed is None:  # from torch's generator, so torch.manual_seed fixes it
                seed = seed_from_int64(int(torch.empty((), dtype=torch.int64).random_()))
            pattern = seed_as_int64(check_seed(seed))
            self.register_buffer("feedback_seed", torch.tensor(pattern, device=device))
            host_value(self, "feedback_seed")
        if storage == "stored":
            name = "feedback_magnitude" if method == "frsf" else "feedback_weight"
            self.register_buffer(name, torch.empty_like(self.weight, requires_grad=False))
        if method == "brsf":
            self._draw = torch.zeros((), dtype=torch.int64)
            self._drawn_version = self._weight_version()
            _REDRAWN.add(self)
        self.register_buffer("weight_norm_init", self.weight.new_empty((), requires_grad=False))
        self.reset_feedback()
        self.record_weight_norm_()

    def reset_parameters(self) -> None:
        """torch's initialisation of W and b, then :meth:`reset_feedback` and
        :meth:`record_weight_norm_`."""
        super().reset_parameters()
        if hasattr(self, "weight_norm_init"):  # not yet during the torch layer's __init__
            self.reset_feedback()
            self.record_weight_norm_()

    @property
    def feedback_step(self) -> torch.Tensor:
        """brsf: the current draw number (int64 0-d CPU tensor); see the module docstring."""
        if self.method != "brsf":
            raise AttributeError(f"method {self.method!r} has no draw counter")
        return self._draw

    @torch.no_grad()
    def reset_feedback(self) -> None:
        """Redraw stored B or |M| from the layer's seed and restart brSF's draw counter."""
        stored = self._stored()
        if stored is not None:
            target = stored.t().contiguous() if self._transposed else stored
            rows = target.shape[0]
            ops.feedback_fill_(target.view(rows, -1), self._seed(), dist=self.feedback_dist,
                               scale=self.feedback_scale)
            if self.method == "frsf":
                target.abs_()
            if target is not stored:
                stored.copy_(target.t())
        if self.method == "brsf":
            self._draw.zero_()

    @torch.no_grad()
    def redraw_feedback_(self) -> FeedbackLayer:
        """brsf: move to the next draw of |M| now. Done automatically after every
        ``torch.optim`` step that changes the weight; call it after a hand-written update.
        Returns the layer."""
        if self.method != "brsf":
            raise ValueError(f"method {self.method!r} draws no new feedback; only brsf does")
        self._draw.add_(1)
        self._drawn_version = self._weight_version()
        return self

    def _weight_version(self) -> tuple[int, int]:
        # the identity too: convert() hands the layer another Parameter, whose counter may
        # coincide with the replaced one's
        return id(self.weight), self.weight._version

    def _redraw_if_updated(self) -> None:
        if self._weight_version() != self._drawn_version:
            self.redraw_feedback_()

    @torch.no_grad()
    def record_weight_norm_(self) -> None:
        """Take the current ‖W‖_F as the norm :func:`constrain_weight_norm` restores. Done at
        initialisation; call it again after re-initialising W by hand."""
        self.weight_norm_init.copy_(torch.linalg.vector_norm(self.weight))

    @torch.no_grad()
    def set_feedback_(self, values: torch.Tensor) -> FeedbackLayer:
        """Copy ``values`` (W's shape) into the stored B (fa, kp) or |M| (frsf; its absolute
        value is what counts). Returns the layer. ValueError when this configuration stores
        no feedback tensor or the shape differs (the contract of every fastcredit layer
        family: docs/architecture.md)."""
        stored = self._stored()
        if stored is None:
            raise ValueError(
                f"method {self.method!r} with feedback={self.feedback!r} stores no feedback tensor"
            )
        if values.shape != stored.shape:
            raise ValueError(
                f"feedback must have the weight's shape {tuple(stored.shape)}, "
                f"got {tuple(values.shape)}"
            )
        stored.copy_(values)
        return self

    @torch.no_grad()
    def feedback_matrix(self) -> torch.Tensor:
        """The B (W's shape) the layer's next backward uses, materialised (a copy). For brsf
        that is the current draw."""
        stored = self._stored()
        if self._transposed:
            weight = self.weight.t().contiguous()
            stored = None if stored is None else stored.t().contiguous()
            return self._rule().matrix(weight, stored, self._draw_or_none()).t().clone()
        b = self._rule().matrix(self.weight, stored, self._draw_or_none())
        return b.clone() if b is self.weight or b is stored else b

    def _linear(self, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        """``x Wᵀ + b`` (``x W + b`` when transposed) with this layer's feedback backward."""
        if self.method == "bp" or backprop_active():
            return F.linear(x, weight.t() if self._transposed else weight, bias)
        return apply_autocast(_LinearFunction, (x, weight, bias, self._stored_checked(),
                                                self._draw_or_none()),
                              self._rule(), self._transposed)

    def _stored(self) -> torch.Tensor | None:
        if self.feedback != "stored":
            return None
        return self.feedback_magnitude if self.method == "frsf" else self.feedback_weight

    def _seed(self) -> int:
        return seed_from_int64(host_value(self, "feedback_seed"))

    def _rule(self) -> FeedbackRule:
        # Only the seeded forms read the seed in backward.
        return FeedbackRule(self.method, self.feedback, self.feedback_scale, self.feedback_dist,
                            self._seed() if self.feedback == "seeded" else 0)

    def _draw_or_none(self) -> torch.Tensor | None:
        return self._draw if self.method == "brsf" else None

    def _stored_checked(self) -> torch.Tensor | None:
        stored = self._stored()
        if stored is not None and stored.shape != self.weight.shape:
            raise RuntimeError(
                f"{type(self).__name__}: stored feedback has shape {tuple(stored.shape)}, "
                f"the weight {tuple(self.weight.shape)}"
            )
        return stored

    def __setstate__(self, state):  # copy.deepcopy and unpickling construct without __init__
        super().__setstate__(state)
        if self.method == "brsf":
            _REDRAWN.add(self)

    # brSF's draw counter is saved and loaded as if it were a buffer (see the module doc).
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.method == "brsf":
            destination[prefix + "feedback_step"] = self._draw.clone()

    # Feedback state a plain model's state_dict lacks: its keys are not reported missing, so
    # convert(plain, method).load_state_dict(plain_state_dict) works with strict=True.
    _FEEDBACK_STATE = ("feedback_seed", "feedback_weight", "feedback_magnitude",
                       "weight_norm_init")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Loads W, b and whatever feedback state the file holds. State it lacks keeps its
        current value (a fresh draw), except ``weight_norm_init``, which is derived from W:
        it is recomputed from the loaded weight, so a pretrained W is not shrunk to the norm
        of the random initialisation by :func:`fastcredit.optim.constrain_weight_norm`."""
        lacking = {prefix + name for name in self._FEEDBACK_STATE} - set(state_dict)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        missing_keys[:] = [k for k in missing_keys if k not in lacking]
        if prefix + "weight_norm_init" in lacking:
            self.record_weight_norm_()  # owners load their weights before their children
        if self.method != "brsf":
            return
        key = prefix + "feedback_step"
        if key in unexpected_keys:
            unexpected_keys.remove(key)
        if key not in state_dict:
            return  # the fresh draw counter, 0
        value = state_dict[key]
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            error_msgs.append(f"{key}: expected a one-element tensor, got {value!r}")
            return
        with torch.no_grad():
            self._draw.copy_(value.reshape(()))
        self._drawn_version = self._weight_version()  # the loaded draw is the current one

    def _feedback_repr(self) -> str:
        text = f"method={self.method!r}"
        if self.feedback is not None:
            text += f", feedback={self.feedback!r}"
        return text


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


class WeightFeedback(FeedbackLayer):
    """The feedback state of one weight matrix that its owner module uses functionally
    (``nn.MultiheadAttention``'s ``in_proj_weight``, an RNN's ``weight_hh_l0``): the owner
    keeps the Parameter under its own name (so its state_dict keys are torch's), this module
    keeps B, the seed, brSF's draw and ``weight_norm_init`` exactly as a :class:`Linear` does
    (same buffers, same rule, :class:`fastcredit.optim.KolenPollack` and
    :func:`~fastcredit.optim.constrain_weight_norm` act on it). ``weight`` reads the owner's
    Parameter, so replacing it there is seen here.

    Arguments: the owner module, the Parameter's name on it, and the method arguments."""

    def __init__(self, owner: nn.Module, name: str, *, method: str = "fa",
                 feedback: str | None = None, seed: int | None = None,
                 feedback_scale: float | None = None,
                 feedback_dist: str | None = None) -> None:
        super().__init__()
        self.__dict__["_owner"] = owner  # not a child: that would make the tree cyclic
        self.weight_name = name
        self._init_feedback(method, feedback, seed, feedback_scale, feedback_dist)

    @property
    def weight(self) -> torch.Tensor:
        return getattr(self._owner, self.weight_name)

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x Wᵀ + b`` for ``x [*, in]``: backward sends ``δ B`` to x, true gradients to W, b."""
        return self._linear(x, self.weight, bias)

    def reset_parameters(self) -> None:
        raise TypeError("WeightFeedback holds no parameters: reset the owner module's")

    def extra_repr(self) -> str:
        return f"{self.weight_name}, {self._feedback_repr()}"
