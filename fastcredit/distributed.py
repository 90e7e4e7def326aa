"""Model-parallel DFA: a network split into pipeline stages, one per rank, trained by DFA.

Why DFA pipelines well (Launay et al. 2020): a hidden block's update needs only the output
error ``e`` and its own feedback matrix ``B_l``, never the gradient of the block above. So,
per micro-batch, activations flow forward rank to rank as in any pipeline, the last rank
computes the loss and ``e = dL/d(output)`` and sends ``e`` (``[rows, C]``, small) to every
other stage, and each stage computes its own weight gradients from ``e`` and the activations
it kept as soon as it is free: forwards keep priority (the stages below wait for them), so a
stage feeds the errors that have arrived while its next activation is on its way, and the
rest after its last forward. There is no backward wave: no stage waits for a gradient from
the stage above, and a stage steps its optimizer once its last micro-batch is fed.

No feedback matrix travels: every rank builds the whole converted model (same seed) and so
holds the model's :class:`~fastcredit.nn.DFAOutput`; a stage regenerates its points' ``B_l``
from that output's ``seed`` and the point index, exactly as the single-process output does.
The output's geometry (every point's ``d_l``, which the normalisations need) and seed are
exchanged once, in the first step: the widths travel forward with the first micro-batch, the
last rank sends the full table (and its seed) back with the first ``e``. Each stage then
calls the very same :class:`DFAOutput` code on its own records with the received ``e``, so
the gradients equal those of single-process DFA on the whole model with the same
micro-batches (tests/test_distributed.py checks this in float64 on 2 and 4 gloo ranks).

Messages (point to point on ``torch.distributed``, tested on gloo; each kind has its tag and
is received in the order it is sent, as backends without tags need):
activations ``r -> r+1``; ``e`` (and, for ``signal="sign"``, the output it was computed
from) ``last -> r`` for every other stage; each is preceded by a 10-integer shape header
(with ``static_shapes=True``, in the first step only).

The step's loss is the mean of the micro-batches' losses (each micro-batch's backward gets
``loss_m / micro_batches``), as ``torch.distributed.pipelining`` scales by default.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ._spec import check_positive_int
from .nn.dfa.layout import Layout
from .nn.dfa.output import DFAOutput
from .nn.dfa.point import DFAPoint, dfa_points

__all__ = ["DFAPipeline", "StageFailure", "split_by_blocks"]

_ACTIVATION, _ERROR, _OUTPUT, _WIDTHS, _GEOMETRY = 1, 2, 3, 4, 5  # message tags
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
           torch.int32)
_HEADER = 10  # dtype code, ndim, up to 8 dims


class StageFailure(RuntimeError):
    """A message a stage waited for did not come: another stage failed or stopped."""


def split_by_blocks(model: nn.Sequential, num_stages: int) -> list[nn.Sequential]:
    """Cut a DFA-converted ``nn.Sequential`` into ``num_stages`` contiguous stages at DFA
    block boundaries, with numbers of blocks that differ by at most one.

    A stage may end after a top-level child whose output is a DFA point's (its last
    :class:`DFAPoint` comes after every layer with parameters in it), so each stage's output
    is detached and the layers of one block never span two stages. The stages share the
    model's modules and keep their names (``stage.state_dict()`` keys are the model's).

    Raises:
        TypeError: ``model`` is not an ``nn.Sequential`` (give stages by hand instead).
        ValueError: no DFA point in ``model``, or fewer blocks than ``num_stages``.
    """
    check_positive_int("num_stages", num_stages)
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"split_by_blocks needs an nn.Sequential, got {type(model).__name__}; "
                        "for another model pass each rank's stage to DFAPipeline by hand")
    if not dfa_points(model):
        raise ValueError("split_by_blocks: the model has no DFAPoint; convert(model, 'dfa') "
                         "it first")
    children = list(model._modules.items())
    ends = [i for i, (_, child) in enumerate(children[:-1]) if _ends_at_point(child)]
    blocks = len(ends) + 1
    if blocks < num_stages:
        raise ValueError(f"split_by_blocks: the model has {blocks} DFA blocks that can be cut "
                         f"at its top level, fewer than num_stages={num_stages}")
    cuts = [ends[round(k * blocks / num_stages) - 1] + 1 for k in range(1, num_stages)]
    bounds = [0, *cuts, len(children)]
    return [nn.Sequential(OrderedDict(children[a:b])) for a, b in zip(bounds, bounds[1:])]


def _ends_at_point(module: nn.Module) -> bool:
    """Whether ``module``'s last DFA point comes after every module owning parameters."""
    last_point = last_weights = -1
    for k, m in enumerate(module.modules()):
        if isinstance(m, DFAPoint):
            last_point = k
        elif any(True for _ in m.parameters(recurse=False)):
            last_weights = k
    return last_point > last_weights


class DFAPipeline:
    """One rank's stage of a DFA-trained pipeline (see the module docstring).

    Every rank of ``group`` builds one, in stage order (stage index = rank in ``group``),
    and calls :meth:`step` together with the others.

    Args:
        stage: this rank's part of the model, e.g. ``split_by_blocks(model, n)[rank]``. Its
            points must belong to the whole model's :class:`DFAOutput` (built on every rank
            the same way); every stage but the last must end at a DFA point (its output is
            detached, so it holds at least one point); the last stage must end with the
            DFAOutput (its output is the output's), as ``convert(model, "dfa")`` arranges.
        loss_fn: ``loss_fn(output, targets) -> scalar``, used on the last stage.
        optimizer: optional; if given, :meth:`step` zeroes its gradients first and steps it
            as soon as this stage's gradients are complete.
        group: the process group (default: the world).
        device: where messages are received (default: the first parameter's device, else
            the CPU).
        timeout: seconds to wait for any one message before raising :class:`StageFailure`
            (default: the process group's timeout).
        static_shapes: False (default): every message carries its shape (a 10-integer
            header, received first). True: shapes travel in the first step only and every
            later step must send the same shapes (the same batch size and micro-batches),
            else the sending stage raises ValueError; each message is then one receive
            instead of two (see benchmarks/NOTES.md, "Model-parallel DFA").

    Raises:
        ValueError: a group of one rank, a stage without the DFA points or output described
            above, or a ``signal="target"`` output (its labels would have to travel as well).
    """

    def __init__(self, stage: nn.Module, *, loss_fn: Callable | None = None,
                 optimizer: torch.optim.Optimizer | None = None,
                 group: dist.ProcessGroup | None = None, device: torch.device | None = None,
                 timeout: float | None = None, static_shapes: bool = False) -> None:
        self.stage = stage
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.group = group
        self.index = dist.get_rank(group)
        self.num_stages = dist.get_world_size(group)
        if self.num_stages < 2:
            raise ValueError("DFAPipeline needs a process group of at least 2 ranks (one "
                             "stage each); train a single stage as usual")
        self.is_last = self.index == self.num_stages - 1
        if device is None:
            first = next(stage.parameters(), None)
            device = torch.device("cpu") if first is None else first.device
        self.device = torch.device(device)
        self.timeout = None if timeout is None else timedelta(seconds=timeout)
        self.static_shapes = bool(static_shapes)
        self._shapes: dict[tuple, tuple] = {}  # (tag, peer, micro-batch) -> (dtype, shape)
        owners = {id(p.output): p.output for p in dfa_points(stage)}
        held = {id(m): m for m in stage.modules() if isinstance(m, DFAOutput)}
        owners.update(held)
        if len(owners) > 1:
            raise ValueError(f"stage {self.index}'s DFA points belong to {len(owners)} "
                             "different DFAOutputs; a pipeline trains one DFA model")
        self.output: DFAOutput = next(iter(owners.values()), None)
        where = f"stage {self.index} of {self.num_stages}"
        if self.is_last:
            if not held:
                raise ValueError(f"{where} (the last) must hold the model's DFAOutput")
            if loss_fn is None:
                raise ValueError(f"{where} (the last) needs loss_fn")
        elif held:
            raise ValueError(f"{where} holds the DFAOutput; only the last stage may")
        elif self.output is None:
            raise ValueError(f"{where} has no DFA point: every stage but the last must end at "
                             "one (a stage without points could not learn; merge it with a "
                             "neighbour)")
        if self.output.signal == "target":
            raise ValueError("DFAPipeline supports signal='error' and 'sign', not 'target'")
        self._first_step = True

    # ---- messages ------------------------------------------------------------------------
    def _peer(self, stage_index: int) -> int:
        if self.group is None:
            return stage_index
        return dist.get_global_rank(self.group, stage_index)

    @contextmanager
    def _talking(self, peer: int, what: str):
        """Turn a backend's error in a message to or from ``peer`` into StageFailure."""
        try:
            yield
        except Exception as err:  # the backends raise RuntimeError subclasses of their own
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise StageFailure(
                f"pipeline stage {self.index}: {what} with stage {peer} failed ({reason}); "
                "another stage failed or stopped, so this step cannot complete"
            ) from err

    def _wait(self, work, peer: int, what: str) -> None:
        with self._talking(peer, what):
            if self.timeout is None:
                work.wait()
            else:
                work.wait(self.timeout)

    def _shape_known(self, m: int | None) -> bool:
        """Whether micro-batch ``m``'s message of a kind travels without its header."""
        return self.static_shapes and m is not None and not self._first_step

    def _send(self, tensor: torch.Tensor, to: int, tag: int, m: int | None = None) -> list:
        data = tensor.detach().contiguous()
        key, shape = (tag, to, m), (data.dtype, tuple(data.shape))
        parts = [data]
        if self._shape_known(m):
            if self._shapes[key] != shape:
                raise ValueError(
                    f"static_shapes: stage {self.index} would send micro-batch {m}'s message "
                    f"(tag {tag}) as {shape}, but the first step fixed {self._shapes[key]}; "
                    "keep the batch size and micro-batches, or build a new DFAPipeline")
        else:
            header = torch.zeros(_HEADER, dtype=torch.int64)
            header[0], header[1] = _DTYPES.index(data.dtype), data.dim()
            header[2:2 + data.dim()] = torch.tensor(data.shape, dtype=torch.int64)
            parts.insert(0, header.to(self.device))
            if self.static_shapes and m is not None:
                self._shapes[key] = shape
        with self._talking(to, "sending"):
            return [(dist.isend(t, group=self.group, tag=tag, dst=self._peer(to)), to)
                    for t in parts]

    def _irecv(self, tensor: torch.Tensor, source: int, tag: int, what: str):
        with self._talking(source, f"receiving {what}"):
            return dist.irecv(tensor, group=self.group, tag=tag, src=self._peer(source))

    def _post(self, source: int, tag: int, what: str, m: int | None = None):
        """Post the receive of a message's first part: its data if the shape is known, else
        its header. Returns (buffer, work, whether the buffer is the data)."""
        if self._shape_known(m):
            dtype, shape = self._shapes[(tag, source, m)]
            data = torch.empty(shape, dtype=dtype, device=self.device)
            return data, self._irecv(data, source, tag, what), True
        header = torch.empty(_HEADER, dtype=torch.int64, device=self.device)
        return header, self._irecv(header, source, tag, what), False

    def _receive(self, source: int, tag: int, what: str, posted=None,
                 m: int | None = None) -> torch.Tensor:
        first, work, is_data = posted or self._post(source, tag, what, m)
        self._wait(work, source, f"receiving {what}")
        if is_data:
            return first
        code, ndim, *dims = first.tolist()
        data = torch.empty(dims[:ndim], dtype=_DTYPES[code], device=self.device)
        self._wait(self._irecv(data, source, tag, what), source, f"receiving {what}")
        if self.static_shapes and m is not None:
            self._shapes[(tag, source, m)] = (data.dtype, tuple(data.shape))
        return data

    # ---- a step --------------------------------------------------------------------------
    def step(self, inputs: torch.Tensor | None = None, targets: torch.Tensor | None = None, *,
             micro_batches: int) -> torch.Tensor | None:
        """One training step over a batch cut into ``micro_batches`` along dim 0
        (``tensor_split``). ``inputs``: the batch, on the first stage (ignored elsewhere);
        ``targets``: its targets, on the last stage. Returns the step's loss (the mean of the
        micro-batches' losses, detached) on the last stage, None elsewhere.

        Raises:
            ValueError: missing inputs/targets, or fewer rows than micro-batches.
            StageFailure: a message from another stage did not arrive.
        """
        check_positive_int("micro_batches", micro_batches)
        chunks = targets_chunks = None
        if self.index == 0:
            chunks = self._split("inputs", inputs, micro_batches)
        if self.is_last:
            targets_chunks = self._split("targets", targets, micro_batches)
        if self.optimizer is not None:
            self.optimizer.zero_grad()
        with torch.enable_grad():
            if self.is_last:
                loss, sends = self._run_last(chunks, targets_chunks, micro_batches)
            else:
                loss, sends = None, self._run_hidden(chunks, micro_batches)
        if self.optimizer is not None:  # the gradients are complete: no need to wait for more
            self.optimizer.step()
        for work, peer in sends:  # their buffers are activations and errors, not weights
            self._wait(work, peer, "sending")
        self._first_step = False
        return loss

    @staticmethod
    def _split(name: str, batch: torch.Tensor | None, micro_batches: int) -> tuple:
        if not isinstance(batch, torch.Tensor):
            raise ValueError(f"this stage needs {name} (a tensor), got {type(batch).__name__}")
        if batch.dim() == 0 or batch.shape[0] < micro_batches:
            raise ValueError(f"{name} of shape {list(batch.shape)} cannot be cut into "
                             f"{micro_batches} micro-batches along dim 0")
        return batch.tensor_split(micro_batches)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Run the stage on one micro-batch; returns its output and this forward's records."""
        self.output.discard_pending()
        out = self.stage(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"stage {self.index} must return a tensor, got {type(out).__name__}")
        tape = []
        if not self.is_last:
            tape, self.output._tape = self.output._tape, []
        return out, tape

    def _widths(self, tape: list) -> torch.Tensor:
        """``[k, 2]`` (point index, d_l) for this stage's recorded points."""
        rows = []
        for i, h in tape:
            point = self.output.points[i]
            dims = self.output.batch_dims if point.batch_dims is None else point.batch_dims
            rows.append((i, Layout.of(h.shape, dims, point.spatial, f"DFAPoint {i}").features))
        return torch.tensor(rows, dtype=torch.int64).reshape(-1, 2)

    def _run_hidden(self, chunks, micro_batches: int) -> list:
        sends, tapes = [], deque()
        last = self.num_stages - 1
        posted = self._post(last, _ERROR, "the output error", 0)
        fed = 0
        for m in range(micro_batches):
            if self.index == 0:
                x, widths = chunks[m], torch.zeros(0, 2, dtype=torch.int64)
            else:
                # Forwards come first (the stages below wait for them); errors that have
                # arrived are fed while the next activation is on its way.
                incoming = self._post(self.index - 1, _ACTIVATION, "an activation", m)
                while fed < m and not incoming[1].is_completed() and posted[1].is_completed():
                    posted = self._feed(tapes.popleft(), posted, fed, micro_batches)
                    fed += 1
                x = self._receive(self.index - 1, _ACTIVATION, "an activation", incoming, m)
                if self._first_step and m == 0:
                    widths = self._receive(self.index - 1, _WIDTHS, "the point widths")
            out, tape = self._forward(x)
            if out.requires_grad:
                raise ValueError(
                    f"stage {self.index}'s output requires grad: layers after its last DFA "
                    "point would get no gradient (end every stage but the last at a point)")
            sends += self._send(out, self.index + 1, _ACTIVATION, m)
            if self._first_step and m == 0:
                widths = torch.cat([widths, self._widths(tape)])
                sends += self._send(widths, self.index + 1, _WIDTHS)
            tapes.append(tape)
        while fed < micro_batches:
            posted = self._feed(tapes.popleft(), posted, fed, micro_batches)
            fed += 1
        return sends

    def _feed(self, tape: list, posted, m: int, micro_batches: int):
        """Receive micro-batch ``m``'s error and deliver it to this stage's records; returns
        the posted receive of the next error's header."""
        last = self.num_stages - 1
        e = self._receive(last, _ERROR, "the output error", posted, m)
        output = None
        if self.output.signal != "error":
            output = self._receive(last, _OUTPUT, "the output", m=m)
        if self._first_step and m == 0:
            geometry = self._receive(last, _GEOMETRY, "the DFA geometry").tolist()
            self.output.seed.fill_(geometry[0])
            self.output.point_features.copy_(torch.tensor(geometry[1:]))
        if m + 1 < micro_batches:
            posted = self._post(last, _ERROR, "the output error", m + 1)
        if tape:
            # The output's own code makes the feedback, from a stand-in for the output
            # (its values matter only to the "sign" signal's scale).
            self.output._tape = tape
            anchor = (torch.zeros_like(e) if output is None else output).requires_grad_()
            self.output(anchor).backward(e)
        return posted

    def _run_last(self, chunks, targets, micro_batches: int) -> tuple[torch.Tensor, list]:
        output = self.output
        sends, total = [], None
        for m in range(micro_batches):
            x = self._receive(self.index - 1, _ACTIVATION, "an activation", m=m)
            if self._first_step and m == 0:
                for i, d in self._receive(self.index - 1, _WIDTHS, "the point widths").tolist():
                    output.point_features[i] = d
            seen = []
            handle = output.register_forward_hook(lambda mod, args, out: seen.append(out))
            try:
                out, _ = self._forward(x)
            finally:
                handle.remove()
            if not seen or out is not seen[-1]:
                raise ValueError(f"the last stage (stage {self.index}) must return the "
                                 "DFAOutput's output: the error it sends is dL/d(that output)")
            loss = self.loss_fn(out, targets[m]) / micro_batches
            (e,) = torch.autograd.grad(loss, out, retain_graph=True)
            for r in range(self.index):
                sends += self._send(e, r, _ERROR, m)
                if output.signal != "error":
                    sends += self._send(out, r, _OUTPUT, m)
                if self._first_step and m == 0:
                    geometry = torch.cat([output.seed.reshape(1).cpu(),
                                          output.point_features.cpu()])
                    sends += self._send(geometry, r, _GEOMETRY)
            out.backward(e)
            total = loss.detach() if total is None else total + loss.detach()
        return total, sends

    # ---- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """This stage's checkpoint: the stage's ``state_dict``, the optimizer's, and (on
        stages other than the last, which holds it) the DFA output's: its seed, geometry and
        any stored feedback matrices, which each stage makes for itself."""
        state = {"stage": self.stage.state_dict(),
                 "optimizer": None if self.optimizer is None else self.optimizer.state_dict()}
        if not self.is_last:
            state["dfa_output"] = self.output.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved (on the same stage of the same split)."""
        self.stage.load_state_dict(state["stage"])
        if self.optimizer is not None and state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if "dfa_output" in state:
            self.output.load_state_dict(state["dfa_output"])
