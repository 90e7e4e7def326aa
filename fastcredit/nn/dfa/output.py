"""Direct feedback alignment (Nøkland 2016), with the practices of Launay et al. 2019/2020.

A network is cut into blocks by :class:`DFAPoint` modules and ends in a :class:`DFAOutput`::

    h1 = point1(tanh(fc1(x)))        # forward value unchanged, graph cut after the block
    h2 = point2(tanh(fc2(h1)))
    logits = dfa(fc3(h2))            # identity forward
    loss = F.cross_entropy(logits, y); loss.backward()

In that one ``loss.backward()``, the output block (fc3) gets its true gradient, and every
point's block gets ``e @ B_l`` (reshaped to the point's shape) as the gradient of its output,
where ``e = dL/dlogits``. Autograd then carries that signal through the block's own layers
only: a point returns its input *detached*, so the next block computes no input gradient and
the blocks' backward passes do not depend on each other.

How it works: each point records the (still attached) tensor it was given on its
``DFAOutput``'s tape for the current forward. ``DFAOutput`` hands the output and all recorded
tensors to one autograd Function, whose forward is the identity on the output and whose
backward returns ``e`` for the output and the projections for the recorded tensors. No nested
``backward`` call, no second forward, no hooks. Each forward gets its own Function node, so
several forwards before one backward (gradient accumulation) work; the tape only carries
tensors from the points to the output within one forward and is emptied by every
``DFAOutput`` call.

What belongs to one forward: a point's output is detached, so the autograd graph cannot tell
which recorded tensors fed the output (connecting them would make every block compute its
input gradient, the cost DFA avoids). The tape is therefore delimited by events instead:
every ``DFAOutput`` call takes the whole tape; a point that runs again while its earlier
record is pending (``reuse=False``) drops that record and all earlier ones, as a forward that
was abandoned; models from :func:`fastcredit.convert` also clear the tape at the start of
every call of the converted model. Nothing is recorded under ``torch.no_grad()`` or during a
backward pass (non-reentrant checkpointing recomputes the forward there; the first
forward's records are the ones fed). Reentrant checkpointing cannot train a DFA block: its
input carries no gradient, so ``torch.utils.checkpoint`` never re-runs the block in backward
(a point raises RuntimeError there).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ... import functional, ops
from ..._spec import DISTS, check_choice, check_seed, derive_seed, seed_as_int64, seed_from_int64
from .._host import host_value
from ..mode import backprop_active
from .layout import Layout, rows_compatible
from .point import as_point

FEEDBACK_MODES = ("seeded", "stored", "shared")
NORMALIZATIONS = ("launay2019", "tinydfa", "nokland2016", "none")
SIGNALS = ("error", "sign", "target")
ERROR_SCALES = ("loss", "batch")
# The distribution each normalisation was published with.
_DEFAULT_DIST = {"launay2019": "normal", "tinydfa": "uniform", "nokland2016": "uniform",
                 "none": "uniform"}
# What each paper's code fixes (ALGORITHMS.md §3.4, §4.1, §5): matrix structure,
# normalisation, distribution, error scale.
PRESETS = {
    # dfa-torch: one ErrorFeedback module (own matrix) per point, uniform ±1/sqrt(d_l); its
    # default criterion's error sigmoid(a) - Y is not divided by the batch.
    "nokland2016": {"feedback": "seeded", "normalization": "nokland2016", "dist": "uniform",
                    "error_scale": "batch"},
    # dfatools: one N(0, 1/(C*D_max)) matrix, point l takes its first d_l columns times
    # sqrt(D_max/d_l); it projects softmax - onehot (no 1/N).
    "launay2019": {"feedback": "shared", "normalization": "launay2019", "dist": "normal",
                   "error_scale": "batch"},
    # TinyDFA: one uniform [-1, 1) matrix, prefixes, 1/sqrt(D_max); it projects the gradient
    # that reaches the output op (with the loss's own 1/N).
    "tinydfa": {"feedback": "shared", "normalization": "tinydfa", "dist": "uniform",
                "error_scale": "loss"},
}
_DEFAULTS = {"feedback": "seeded", "normalization": "launay2019", "error_scale": "loss"}


def resolve_preset(preset: str | None, **given) -> dict:
    """The options ``feedback``, ``normalization``, ``dist`` and ``error_scale`` that
    ``preset`` fixes (or the defaults), with ``given`` ones (None = not given) filled in.
    ValueError for an unknown preset or a given option that contradicts it."""
    if preset is None:
        resolved = {k: _DEFAULTS[k] if v is None else v
                    for k, v in given.items() if k != "dist"}
        resolved["dist"] = given["dist"]
        return resolved
    check_choice("preset", preset, tuple(PRESETS))
    fixed = PRESETS[preset]
    for key, value in given.items():
        if value is not None and value != fixed[key]:
            raise ValueError(
                f"preset {preset!r} fixes {key}={fixed[key]!r}, got {key}={value!r}: drop the "
                f"option, or spell the preset's options out without it ({fixed})")
    return dict(fixed)


class _Deliver(torch.autograd.Function):
    """Identity on the network output; in backward, the output keeps its gradient e and every
    recorded point tensor receives its projection of the signal."""

    @staticmethod
    def forward(ctx, output, plan, *points):
        ctx.plan = plan
        return output

    @staticmethod
    @once_differentiable  # the rule is no derivative: a second order of it is undefined
    def backward(ctx, grad_output):
        grads = ctx.plan.owner._feedback(ctx.plan, grad_output, ctx.needs_input_grad[2:])
        return (grad_output, None, *grads)


@dataclass
class _Plan:
    """What one forward's backward needs: no tensors but the labels and, for the "sign" and
    "target" signals, the (detached) output, from which the error's scale is recovered."""

    owner: DFAOutput
    output_layout: Layout
    indices: list[int]
    layouts: list[Layout]
    targets: torch.Tensor | None
    output: torch.Tensor | None


class DFAOutput(nn.Module):
    """Applied to the network output: identity forward; in backward, delivers the projected
    output error to every feedback point, within the same ``loss.backward()``.

    For the output error ``e = dL/d(output)`` reshaped to ``[rows, C]`` (batch dims as rows),
    point l receives ``s @ B_l`` with ``B_l [C, d_l]`` and the signal ``s``:

    - ``signal="error"``: ``s = e`` (DFA; Nøkland 2016). The loss's own reduction (1/N for
      ``reduction="mean"``) is in e, and applied nowhere else.
    - ``signal="sign"``: ``s = k sign(e)`` (sign-DFA).
    - ``signal="target"``: ``s = -k onehot(targets)`` (DRTP, Frenkel et al. 2021): the
      labels replace the error. Pass them as ``dfa(logits, targets)``; in eval mode they may
      be omitted (no feedback is made).

    ``k`` is the scale that the loss gave e, recovered from e itself: the output is taken
    as logits of a softmax cross-entropy, ``e = k (softmax(output) - onehot)`` (labels:
    ``targets``, or for "sign" each row's most negative entry), and k is fitted by least
    squares (:func:`fastcredit.functional.softmax_error_scale`). For a mean-reduced loss
    ``k = 1/rows``, the published normalisation, so a learning rate tuned for ``"error"``
    transfers; a scaled loss (``GradScaler``, ``loss / n``) scales k, so these signals are
    linear in the loss scale and two half-batches of ``loss / 2`` equal one batch, as for
    ``"error"``. With a loss other than softmax cross-entropy use ``"error"``. The output
    block itself always gets its true gradient e.

    ``error_scale`` sets the scale of ``s`` (never of the output block's gradient):

    - ``"loss"`` (default): as above; with a mean loss, ``s`` carries its 1/rows (TinyDFA).
    - ``"batch"``: ``s`` as above times ``rows`` (``sign(e)``, ``-onehot`` for the other
      signals). With a mean cross-entropy, ``s = softmax - onehot`` per row: the error
      Launay 2019's and Nøkland 2016's code project. Linear in the loss (a loss scaled by k
      gives k times ``s``: nothing is renormalised). At the same learning rate, plain SGD
      moves the hidden blocks ``rows`` times more than with ``"loss"``; Adam and RMSprop,
      invariant to a gradient's scale but for their eps, hardly change.

    Feedback matrices (``B_l = factor_l * R_l``, ``R_l`` with entries from ``dist``):

    - ``feedback="seeded"`` (default): ``R_l = F(seed_l)[:C, :d_l]``, regenerated tile by tile
      in every backward by :func:`fastcredit.seeded_project` and never stored; a point costs
      an 8-byte seed derived from this module's ``seed`` buffer.
    - ``"stored"``: each point's B_l is a buffer (initialised to the seeded matrix, so both
      modes agree for the same seed; replace it with ``point.set_feedback_matrix``).
    - ``"shared"``: one matrix for all points, point l using its first d_l columns (TinyDFA).
      Seeded, so the prefix is free: it is the corner of F(seed); one projection serves all
      points.

    ``normalization`` sets ``factor_l`` (times ``scale``); ``dist=None`` picks the
    distribution it was published with:

    - ``"launay2019"`` (normal): ``1/sqrt(C*d_l)``, i.e. N(0, 1/(D_max*C)) entries times the
      per-point ``sqrt(D_max/d_l)``; ``||s B_l|| ~ ||s||/sqrt(C)`` for every width.
    - ``"tinydfa"`` (uniform on [-1, 1)): ``1/sqrt(D_max)``, one global factor.
    - ``"nokland2016"`` (uniform): ``1/sqrt(d_l)``, i.e. entries uniform on
      ``±1/sqrt(d_l)``.
    - ``"none"`` (uniform): 1.

    ``dist="normal32"`` / ``"uniform32"`` draws the same distribution in float32, for GPUs with
    slow FP64 (docs/kernels.md); its values are not bit-identical across devices.

    ``preset`` fixes ``feedback``, ``normalization``, ``dist`` and ``error_scale`` as a
    paper's code has them (ALGORITHMS.md §3.4, §4.1, §5); passing one of those too raises
    ValueError unless it agrees:

    - ``"nokland2016"`` (dfa-torch): ``"seeded"`` (an independent matrix per point),
      ``"nokland2016"``, uniform, ``"batch"``. dfa-torch's default criterion is a sigmoid
      cross-entropy summed over classes; its error ``sigmoid(a) - Y`` is what a loss averaged
      over rows (summed over classes) gives here.
    - ``"launay2019"`` (dfatools): ``"shared"`` (one matrix, point l its first d_l columns),
      ``"launay2019"``, normal, ``"batch"``: with a mean cross-entropy every point receives
      ``(softmax - onehot) @ B_full[:, :d_l] * sqrt(D_max/d_l)``, ``B_full`` N(0, 1/(C D_max)).
    - ``"tinydfa"`` (TinyDFA): ``"shared"``, ``"tinydfa"``, uniform, ``"loss"``.

    Without a preset the defaults are ``"seeded"``, ``"launay2019"`` and ``"loss"``: Launay's
    normalisation, but independent matrices and the loss's own scale.

    ``D_max`` is the largest ``d_l``. The geometry (every ``d_l``) is fixed by the first
    forward that records all points, and kept in the ``point_features`` buffer; ``seed``,
    ``point_features`` and stored matrices are buffers, so ``state_dict()`` round-trips.

    Args:
        points: the feedback points (:class:`DFAPoint`, or modules with a ``point``
            attribute such as :class:`DFALinear`), e.g. ``dfa_points(model)``.
        num_outputs: C, the number of output features per row.
        batch_dims: dims of the output that index rows (e.g. ``(0, 1)`` for [N, T, vocab]).
        seed: base seed; default drawn from torch's global generator.
        error_scale: ``"loss"`` or ``"batch"`` (above).
        preset: ``"nokland2016"``, ``"launay2019"`` or ``"tinydfa"`` (above), or None.

    Raises:
        ValueError: an unknown option value, or an option that contradicts ``preset``.
    """

    def __init__(
        self,
        points: Iterable[nn.Module],
        num_outputs: int,
        *,
        feedback: str | None = None,
        normalization: str | None = None,
        dist: str | None = None,
        scale: float = 1.0,
        signal: str = "error",
        batch_dims: Sequence[int] = (0,),
        seed: int | None = None,
        error_scale: str | None = None,
        preset: str | None = None,
    ):
        super().__init__()
        options = resolve_preset(preset, feedback=feedback, normalization=normalization,
                                 dist=dist, error_scale=error_scale)
        feedback, normalization = options["feedback"], options["normalization"]
        dist, error_scale = options["dist"], options["error_scale"]
        check_choice("feedback", feedback, FEEDBACK_MODES)
        check_choice("normalization", normalization, NORMALIZATIONS)
        check_choice("signal", signal, SIGNALS)
        check_choice("error_scale", error_scale, ERROR_SCALES)
        dist = _DEFAULT_DIST[normalization] if dist is None else dist
        check_choice("dist", dist, DISTS)
        if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
            raise ValueError(f"num_outputs must be a positive int, got {num_outputs!r}")
        if not math.isfinite(scale):
            raise ValueError(f"scale must be finite, got {scale}")
        resolved = [as_point(p) for p in points]
        if not resolved:
            raise ValueError("DFAOutput needs at least one DFAPoint")
        if len({id(p) for p in resolved}) != len(resolved):
            raise ValueError("the same DFAPoint is listed twice")
        owned = [i for i, point in enumerate(resolved) if point._owner is not None]
        if owned:
            raise ValueError(f"points {owned} already belong to another DFAOutput")
        for i, point in enumerate(resolved):
            point._attach(self, i)
        self.__dict__["points"] = resolved  # not submodules: they live in the model's tree
        self.num_outputs = num_outputs
        self.feedback = feedback
        self.normalization = normalization
        self.dist = dist
        self.scale = float(scale)
        self.signal = signal
        self.error_scale = error_scale
        self.preset = preset
        self.batch_dims = tuple(int(d) for d in batch_dims)
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        seed = seed_as_int64(check_seed(seed))
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.int64))
        self.register_buffer("point_features", torch.full((len(resolved),), -1, dtype=torch.int64))
        if feedback == "stored":
            for i in range(len(resolved)):
                self.register_buffer(f"feedback_{i}", None)
        self._tape: list[tuple[int, torch.Tensor]] = []
        self._host_cache: dict = {}
        host_value(self, "seed")
        host_value(self, "point_features")

    def _record(self, index: int, h: torch.Tensor, reuse: bool) -> None:
        """Point ``index`` saw ``h`` (still attached) in the current forward. Without
        ``reuse`` a pending record of the same point belongs to an abandoned forward: it and
        every earlier record are dropped."""
        if not reuse:
            for k in range(len(self._tape) - 1, -1, -1):
                if self._tape[k][0] == index:
                    del self._tape[: k + 1]
                    break
        self._tape.append((index, h))

    def discard_pending(self) -> None:
        """Forget what points recorded since the last call (a forward that will not reach
        this output). :func:`fastcredit.convert` calls it at the start of every forward of
        the converted model."""
        self._tape.clear()  # in place: nn.Module.__setattr__ costs microseconds per call

    # ---- feedback matrices ---------------------------------------------------------------
    def _host(self, name: str):
        return host_value(self, name)

    def _features(self, index: int) -> int:
        value = self._host("point_features")[index]
        if value < 0:
            raise RuntimeError(
                f"point {index}'s feature count is not known yet: run one forward with "
                "gradients enabled through every point first"
            )
        return value

    def features_of(self, index: int) -> int | None:
        """Point ``index``'s d_l, or None while the feedback geometry is unknown."""
        value = self._host("point_features")[index]
        return None if value < 0 else value

    def point_seed(self, index: int) -> int:
        """The 64-bit seed of point ``index``'s matrix (the shared one's with "shared")."""
        base = seed_from_int64(self._host("seed"))
        return derive_seed(base, -1 if self.feedback == "shared" else index)

    def point_factor(self, index: int) -> float:
        """``factor_l``: B_l = factor_l * R_l (see the class docstring)."""
        d = self._features(index)
        if self.normalization == "launay2019":
            return self.scale / math.sqrt(self.num_outputs * d)
        if self.normalization == "tinydfa":
            d_max = max(self._features(i) for i in range(len(self.points)))
            return self.scale / math.sqrt(d_max)
        if self.normalization == "nokland2016":
            return self.scale / math.sqrt(d)
        return self.scale

    def feedback_matrix(self, index: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Point ``index``'s effective ``B_l [C, d_l]``, materialised (a copy)."""
        if self.feedback == "stored":
            return self._stored(index).detach().to(dtype=dtype, copy=True)
        return ops.feedback_matrix(
            self.point_seed(index), self.num_outputs, self._features(index), dist=self.dist,
            scale=self.point_factor(index), dtype=dtype, device=self.seed.device,
        )

    def set_feedback_(self, index: int, matrix: torch.Tensor) -> DFAOutput:
        """Replace point ``index``'s B_l by ``matrix [C, d_l]``. ValueError unless
        ``feedback="stored"`` and the shape fits (the contract of every fastcredit layer
        family: docs/architecture.md). Returns the output module."""
        if self.feedback != "stored":
            raise ValueError(
                f"set_feedback_ needs feedback='stored'; this output uses {self.feedback!r}"
            )
        self._set_stored(index, matrix)
        return self

    def set_feedback_matrix(self, index: int, matrix: torch.Tensor) -> None:
        """Deprecated: :meth:`set_feedback_`, which returns the module and raises ValueError
        for a configuration without stored matrices (this raises RuntimeError, as it did)."""
        if self.feedback != "stored":
            raise RuntimeError(
                f"set_feedback_matrix needs feedback='stored'; this output uses {self.feedback!r}"
            )
        self._set_stored(index, matrix)

    def _set_stored(self, index: int, matrix: torch.Tensor) -> None:
        if matrix.dim() != 2 or matrix.shape[0] != self.num_outputs:
            raise ValueError(
                f"feedback matrix must be [C={self.num_outputs}, d_l], got {list(matrix.shape)}"
            )
        known = self._host("point_features")[index]
        if known >= 0 and matrix.shape[1] != known:
            raise ValueError(f"point {index} has d_l = {known} features, got a matrix with "
                             f"{matrix.shape[1]} columns")
        self.point_features[index] = matrix.shape[1]
        setattr(self, f"feedback_{index}",
                matrix.detach().to(device=self.seed.device, copy=True))

    # ---- forward -------------------------------------------------------------------------
    def forward(self, output: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """``output``: the network output (e.g. logits ``[N, C]``); returned unchanged.
        ``targets``: class indices with the shape of the output's batch dims, for
        ``signal="target"`` only."""
        if backprop_active():
            return output
        tape = self._tape[:]
        self._tape.clear()
        output_layout = Layout.of(output.shape, self.batch_dims, "dense", "DFAOutput")
        if output_layout.features != self.num_outputs:
            raise ValueError(
                f"DFAOutput(num_outputs={self.num_outputs}) got an output of shape "
                f"{list(output.shape)}, which has {output_layout.features} features per row "
                f"for batch_dims {self.batch_dims}"
            )
        if targets is not None:
            if self.signal != "target":
                raise ValueError(f"targets are only used by signal='target', not {self.signal!r}")
            self._check_targets(targets, output, output_layout)
        if not tape or not torch.is_grad_enabled():  # points record only with grad enabled
            return output
        if self.signal == "target" and targets is None:
            if self.training:
                raise ValueError(
                    "signal='target' (DRTP) projects the labels: call dfa_output(output, targets)"
                )
            return output
        indices = [i for i, _ in tape]
        layouts = []
        for i, h in tape:
            point = self.points[i]
            dims = self.batch_dims if point.batch_dims is None else point.batch_dims
            layout = Layout.of(h.shape, dims, point.spatial, f"DFAPoint {i}")
            if not rows_compatible(layout.rows, output_layout.rows):
                raise ValueError(
                    f"DFAPoint {i} has {layout.rows} rows (shape {list(layout.shape)}, batch "
                    f"dims {layout.batch_dims}) but the output has {output_layout.rows}: a "
                    "point needs the output's rows or a multiple of them"
                )
            layouts.append(layout)
        self._fix_geometry(indices, [layout.features for layout in layouts], output)
        # Points of frozen blocks fix their geometry but get no feedback.
        fed = [k for k, (_, h) in enumerate(tape) if h.requires_grad]
        if not fed:
            return output
        plan = _Plan(self, output_layout, [indices[k] for k in fed], [layouts[k] for k in fed],
                     targets, None if self.signal == "error" else output.detach())
        return _Deliver.apply(output, plan, *(tape[k][1] for k in fed))

    def _check_targets(self, targets, output, layout) -> None:
        batch_shape = [output.shape[i] for i in layout.batch_dims]
        if targets.dtype != torch.int64 or list(targets.shape) != batch_shape:
            raise ValueError(
                f"targets must be int64 class indices of shape {batch_shape} (the output's "
                f"batch dims), got {targets.dtype} of shape {list(targets.shape)}"
            )
        if not targets.numel():
            return
        if targets.device.type == "cpu":  # a host check costs no device synchronisation
            if not (0 <= targets.min() and targets.max() < self.num_outputs):
                raise ValueError(f"targets must lie in [0, {self.num_outputs}), got values in "
                                 f"[{int(targets.min())}, {int(targets.max())}]")
        else:  # checked on the device, raised at the next synchronisation
            torch._assert_async(((targets >= 0) & (targets < self.num_outputs)).all(),
                                f"targets must lie in [0, {self.num_outputs})")

    def _fix_geometry(self, indices: list[int], widths: list[int], output: torch.Tensor) -> None:
        known = self._host("point_features")
        features: dict[int, int] = {}
        for i, d in zip(indices, widths):
            expected = known[i] if known[i] >= 0 else features.get(i, d)
            if expected != d:
                raise ValueError(
                    f"DFAPoint {i} now has {d} features but its feedback was set up for "
                    f"{expected}"
                )
            features[i] = d
        unknown = [i for i, d in enumerate(known) if d < 0 and i not in features]
        if unknown:
            raise RuntimeError(
                f"the first forward with feedback must reach every DFAPoint (it fixes each "
                f"point's d_l and D_max); points {unknown} recorded nothing (run under "
                "torch.no_grad(), or in a reentrant torch.utils.checkpoint, which cannot train "
                "a DFA block: use use_reentrant=False)"
            )
        if any(known[i] != d for i, d in features.items()):
            for i, d in features.items():
                self.point_features[i] = d
        if self.feedback == "stored":
            dtype = output.dtype if output.dtype.is_floating_point else torch.float32
            for i in range(len(self.points)):
                self._stored(i, dtype)

    def _stored(self, index: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Point ``index``'s stored B_l, created from its seeded matrix on first use."""
        matrix = getattr(self, f"feedback_{index}")
        if matrix is None:
            matrix = ops.feedback_matrix(
                self.point_seed(index), self.num_outputs, self._features(index),
                dist=self.dist, scale=self.point_factor(index), dtype=dtype,
                device=self.seed.device,
            )
            setattr(self, f"feedback_{index}", matrix)
        return matrix

    # ---- backward ------------------------------------------------------------------------
    def _signal(self, plan: _Plan, grad_output: torch.Tensor) -> torch.Tensor:
        e = plan.output_layout.to_rows(grad_output)
        # "batch" multiplies by rows (linear in the loss, no renormalisation): a mean loss's
        # 1/rows is undone, so a mean cross-entropy gives softmax - onehot.
        batch = max(plan.output_layout.rows, 1) if self.error_scale == "batch" else 1
        if self.signal == "error":
            return e * batch if batch != 1 else e
        logits = plan.output_layout.to_rows(plan.output)
        if self.signal == "sign":
            k = functional.softmax_error_scale(e, logits, e.argmin(-1))
            return torch.sign(e) * (k * batch)
        # targets has the shape of the output's batch dims, in order: flat = the row order
        labels = plan.targets.reshape(-1)
        onehot = nn.functional.one_hot(labels, self.num_outputs).to(e.dtype)
        return onehot * -(functional.softmax_error_scale(e, logits, labels) * batch)

    def _feedback(self, plan: _Plan, grad_output: torch.Tensor, needed) -> list:
        signal = self._signal(plan, grad_output)
        grads: list[torch.Tensor | None] = [None] * len(plan.indices)
        wanted = [k for k, need in enumerate(needed) if need]
        if not wanted:
            return grads
        shared = None
        if self.feedback == "shared":
            widest = max(plan.layouts[k].features for k in wanted)
            shared = ops.seeded_project(signal, self.point_seed(0), widest, dist=self.dist)
        for k in wanted:
            i, layout = plan.indices[k], plan.layouts[k]
            if self.feedback == "stored":
                p = signal @ self._stored(i).to(signal.dtype)
            elif self.feedback == "shared":
                p = shared[:, : layout.features] * self.point_factor(i)
            else:
                p = ops.seeded_project(signal, self.point_seed(i), layout.features,
                                       dist=self.dist, scale=self.point_factor(i))
            grads[k] = layout.expand(p)
        return grads

    # ---- state ---------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A plain model's state_dict (convert(plain, "dfa").load_state_dict(plain_state,
        # strict=True)) lacks the seed and the learnt widths: they keep their current values.
        lacking = {prefix + name for name in ("seed", "point_features")} - set(state_dict)
        # Stored matrices are created lazily (their width is learnt in the first forward):
        # make room for the ones a checkpoint brings.
        if self.feedback == "stored":
            for i in range(len(self.points)):
                key = f"{prefix}feedback_{i}"
                if key in state_dict and getattr(self, f"feedback_{i}") is None:
                    setattr(self, f"feedback_{i}",
                            torch.empty_like(state_dict[key], device=self.seed.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        missing_keys[:] = [k for k in missing_keys if k not in lacking]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_tape"] = []  # graph tensors of an unfinished forward are not state
        return state

    def extra_repr(self) -> str:
        return (f"points={len(self.points)}, num_outputs={self.num_outputs}, "
                f"feedback={self.feedback!r}, normalization={self.normalization!r}, "
                f"dist={self.dist!r}, scale={self.scale}, signal={self.signal!r}, "
                f"error_scale={self.error_scale!r}, batch_dims={self.batch_dims}"
                + ("" if self.preset is None else f", preset={self.preset!r}"))
