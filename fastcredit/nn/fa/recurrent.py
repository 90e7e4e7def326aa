"""``nn.RNN``, ``nn.LSTM`` and ``nn.GRU`` trained by backpropagation through time with
feedback matrices in place of ``W_ihᵀ`` and ``W_hhᵀ`` (and LSTM's ``W_hrᵀ``).

The error reaching a layer's input (the layer below, or the input sequence) and the error
carried from step t to step t-1 through the recurrent weights are ``δ B_ih`` and ``δ B_hh``;
the gates' nonlinearities and products keep their true derivatives, and every weight gets its
true gradient for the error delivered to it, summed over time steps (BPTT with FA, as in
Lillicrap et al. 2016's recurrent experiments). One feedback state per weight matrix.

The recurrence is a Python loop over time steps (one small GEMM with W_hh per step, the input
projection of all steps in one GEMM): its per-step cost is Python-level, not cuDNN's fused
kernel, so it is slower than torch's RNNs for long sequences. Packed sequences are not
accepted (pad them; masks handle the padding in the loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..._spec import derive_seed
from ..mode import backprop_active
from .layers import _METHOD_DOC
from .state import WeightFeedback


class _Recurrent:
    """The part shared by RNN, LSTM and GRU; subclasses define ``_cell``."""

    def _init_feedback_states(self, method, feedback, seed, feedback_scale,
                              feedback_dist) -> None:
        names = [n for n in self._flat_weights_names if n.startswith("weight_")]
        self.method = method
        self.feedback = nn.ModuleDict({
            name: WeightFeedback(self, name, method=method, feedback=feedback,
                                 seed=None if seed is None else derive_seed(seed, i),
                                 feedback_scale=feedback_scale, feedback_dist=feedback_dist)
            for i, name in enumerate(names)})

    def _param(self, name: str) -> torch.Tensor | None:
        return getattr(self, name) if self.bias or not name.startswith("bias") else None

    def forward(self, input, hx=None):
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise TypeError(f"fastcredit {type(self).__name__} does not take a PackedSequence; "
                            "pass the padded tensor")
        if self.method == "bp" or backprop_active():
            return super().forward(input, hx)
        if input.dim() not in (2, 3):
            raise ValueError(f"{type(self).__name__} expects a 2-D (unbatched) or 3-D input, "
                             f"got shape {tuple(input.shape)}")
        batched = input.dim() == 3
        lstm = isinstance(self, nn.LSTM)
        x = input if batched else input.unsqueeze(1 if not self.batch_first else 0)
        if self.batch_first:
            x = x.transpose(0, 1)  # [L, N, H_in] from here on
        directions = 2 if self.bidirectional else 1
        out_size = self.proj_size if lstm and self.proj_size > 0 else self.hidden_size
        rows = self.num_layers * directions
        if hx is None:
            h0 = x.new_zeros(rows, x.shape[1], out_size)
            c0 = x.new_zeros(rows, x.shape[1], self.hidden_size) if lstm else None
        else:
            h0, c0 = hx if lstm else (hx, None)
            if not batched:
                h0 = h0.unsqueeze(1)
                c0 = None if c0 is None else c0.unsqueeze(1)
        finals_h, finals_c = [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                index = layer * directions + direction
                state = (h0[index], c0[index]) if lstm else h0[index]
                projected = self.feedback["weight_ih" + suffix].linear(
                    x, self._param("bias_ih" + suffix))
                steps = range(x.shape[0])
                ys = [None] * x.shape[0]
                for t in (reversed(steps) if direction else steps):
                    state = self._cell(projected[t], state, suffix)
                    ys[t] = state[0] if lstm else state
                outputs.append(torch.stack(ys))
                finals_h.append(state[0] if lstm else state)
                if lstm:
                    finals_c.append(state[1])
            x = outputs[0] if directions == 1 else torch.cat(outputs, -1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        out = x.transpose(0, 1) if self.batch_first else x
        h_n = torch.stack(finals_h)
        c_n = torch.stack(finals_c) if lstm else None
        if not batched:
            out = out.squeeze(1 if not self.batch_first else 0)
            h_n = h_n.squeeze(1)
            c_n = None if c_n is None else c_n.squeeze(1)
        return out, ((h_n, c_n) if lstm else h_n)

    def _recurrent(self, h: torch.Tensor, suffix: str) -> torch.Tensor:
        return self.feedback["weight_hh" + suffix].linear(h, self._param("bias_hh" + suffix))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, method={self.method!r}"


_ARGS = """

    Arguments as torch's, plus (keyword-only; ``seed`` fans out to one seed per matrix):"""


class RNN(_Recurrent, nn.RNN):
    __doc__ = (""":class:`torch.nn.RNN` (tanh or relu; multi-layer, bidirectional,
    ``batch_first``) trained by BPTT with feedback matrices in place of W_ihᵀ and W_hhᵀ (see
    the module docstring). Same Parameters and state_dict keys as torch's, plus
    ``feedback.<weight name>.*``.""" + _ARGS + _METHOD_DOC)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None, *,
                 method: str = "fa", feedback: str | None = None, seed: int | None = None,
                 feedback_scale: float | None = None,
                 feedback_dist: str | None = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, nonlinearity, bias, batch_first,
                         dropout, bidirectional, device=device, dtype=dtype)
        self._init_feedback_states(method, feedback, seed, feedback_scale, feedback_dist)

    def _cell(self, projected, h, suffix):
        pre = projected + self._recurrent(h, suffix)
        return torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)


class LSTM(_Recurrent, nn.LSTM):
    __doc__ = (""":class:`torch.nn.LSTM` (multi-layer, bidirectional, ``batch_first``,
    ``proj_size``) trained by BPTT with feedback matrices in place of W_ihᵀ, W_hhᵀ and
    W_hrᵀ (see the module docstring). Same Parameters and state_dict keys as torch's, plus
    ``feedback.<weight name>.*``.""" + _ARGS + _METHOD_DOC)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device=None, dtype=None, *,
                 method: str = "fa", feedback: str | None = None, seed: int | None = None,
                 feedback_scale: float | None = None,
                 feedback_dist: str | None = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device=device, dtype=dtype)
        self._init_feedback_states(method, feedback, seed, feedback_scale, feedback_dist)

    def _cell(self, projected, state, suffix):
        h, c = state
        i, f, g, o = (projected + self._recurrent(h, suffix)).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        if self.proj_size > 0:
            h = self.feedback["weight_hr" + suffix].linear(h)
        return h, c


class GRU(_Recurrent, nn.GRU):
    __doc__ = (""":class:`torch.nn.GRU` (multi-layer, bidirectional, ``batch_first``)
    trained by BPTT with feedback matrices in place of W_ihᵀ and W_hhᵀ (see the module
    docstring). Same Parameters and state_dict keys as torch's, plus
    ``feedback.<weight name>.*``.""" + _ARGS + _METHOD_DOC)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device=None, dtype=None, *, method: str = "fa",
                 feedback: str | None = None, seed: int | None = None,
                 feedback_scale: float | None = None,
                 feedback_dist: str | None = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)
        self._init_feedback_states(method, feedback, seed, feedback_scale, feedback_dist)

    def _cell(self, projected, h, suffix):
        x_r, x_z, x_n = projected.chunk(3, -1)
        h_r, h_z, h_n = self._recurrent(h, suffix).chunk(3, -1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h
