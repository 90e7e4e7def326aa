"""``nn.MultiheadAttention`` with feedback-alignment projections.

The four projections (q, k, v in and the output) are the only weight matrices of attention:
each sends its input gradient through its own feedback matrix (``δ B``, one feedback state
per weight matrix, as a :class:`~fastcredit.nn.fa.Linear` keeps it) and gets its true weight
gradient. Attention's own products (``Q Kᵀ``, the softmax, ``· V``) have no parameters and
keep their true derivatives, as in the FA-on-transformers literature (e.g. Launay et al.
2020 for DFA; Moskovitz et al. 2018 for sign symmetry).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..._spec import derive_seed
from ..amp import apply_autocast
from ..mode import backprop_active
from .layers import _METHOD_DOC, Linear
from .state import WeightFeedback


class _PackedProjection(torch.autograd.Function):
    """q, k, v projected by the three row blocks of one packed weight ``[3E, E]``: each
    input's gradient is its output gradient times the matching rows of B."""

    @staticmethod
    def forward(ctx, q, k, v, weight, bias, stored, draw, rule):
        ctx.rule = rule
        ctx.has_bias = bias is not None
        ctx.save_for_backward(q, k, v, weight, stored, draw)
        biases = bias.chunk(3) if bias is not None else (None,) * 3
        return tuple(F.linear(x, w, b) for x, w, b in zip((q, k, v), weight.chunk(3), biases))

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        q, k, v, weight, stored, draw = ctx.saved_tensors
        inputs = (q, k, v)
        rows = [g.reshape(-1, g.shape[-1]) for g in grads]
        b = ctx.rule.matrix(weight, stored, draw) if any(ctx.needs_input_grad[:3]) else None
        grad_x = [rows[i].mm(part).reshape(inputs[i].shape) if ctx.needs_input_grad[i] else None
                  for i, part in enumerate(b.chunk(3) if b is not None else (None,) * 3)]
        grad_w = grad_b = None
        if ctx.needs_input_grad[3]:
            grad_w = torch.cat([r.t().mm(x.reshape(-1, x.shape[-1]))
                                for r, x in zip(rows, inputs)])
        if ctx.has_bias and ctx.needs_input_grad[4]:
            grad_b = torch.cat([r.sum(0) for r in rows])
        return (*grad_x, grad_w, grad_b, None, None, None)


def _additive(mask: torch.Tensor | None, dtype: torch.dtype, name: str) -> torch.Tensor | None:
    """A boolean mask (True: not allowed) or a float one (added to the scores) as a float."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
            mask, float("-inf"))
    if not torch.is_floating_point(mask):
        raise TypeError(f"{name} must be a bool or floating mask, got {mask.dtype}")
    return mask.to(dtype)


class MultiheadAttention(nn.MultiheadAttention):
    __doc__ = """:class:`torch.nn.MultiheadAttention` whose q/k/v and output projections send
    their input gradient through feedback matrices (see the module docstring); QKᵀ, softmax
    and ·V keep their true derivatives. Same Parameters and state_dict keys as torch's, plus
    ``feedback.<name>.*`` (``in_proj_weight``, or ``q_proj_weight``, ``k_proj_weight``,
    ``v_proj_weight`` when kdim/vdim differ) and ``out_proj.*`` (a fastcredit Linear).

    Forward as torch's (shapes, ``batch_first``, bool or float ``attn_mask`` [L, S] or
    [N·heads, L, S], ``key_padding_mask`` [N, S], ``need_weights``,
    ``average_attn_weights``, ``add_bias_kv``, ``add_zero_attn``, unbatched inputs). torch's
    fused inference fast path is never taken; ``is_causal`` is a hint, as in torch, and needs
    ``attn_mask``, which alone decides the masking. Self-attention (query, key and value the
    same tensor) projects with one GEMM of the packed weight.

    Arguments as torch's, plus (keyword-only; ``seed`` fans out to one seed per matrix):"""
    __doc__ += _METHOD_DOC

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim=None, vdim=None,
                 batch_first: bool = False, device=None, dtype=None, *, method: str = "fa",
                 feedback: str | None = None, seed: int | None = None,
                 feedback_scale: float | None = None,
                 feedback_dist: str | None = None) -> None:
        super().__init__(embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim,
                         vdim, batch_first, device=device, dtype=dtype)
        options = {"method": method, "feedback": feedback, "feedback_scale": feedback_scale,
                   "feedback_dist": feedback_dist}
        names = (["in_proj_weight"] if self._qkv_same_embed_dim
                 else ["q_proj_weight", "k_proj_weight", "v_proj_weight"])
        seeds = [None if seed is None else derive_seed(seed, i) for i in range(len(names) + 1)]
        self.method = method
        self.feedback = nn.ModuleDict({n: WeightFeedback(self, n, seed=s, **options)
                                       for n, s in zip(names, seeds)})
        plain = self.out_proj
        self.out_proj = Linear(embed_dim, embed_dim, plain.bias is not None, device=device,
                               dtype=dtype, seed=seeds[-1], **options)
        self.out_proj.weight, self.out_proj.bias = plain.weight, plain.bias
        self.out_proj.record_weight_norm_()

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.method == "bp" or backprop_active():
            return super().forward(query, key, value, key_padding_mask, need_weights,
                                   attn_mask, average_attn_weights, is_causal)
        if is_causal and attn_mask is None:
            raise RuntimeError("MultiheadAttention: is_causal is a hint and needs attn_mask")
        batched = query.dim() == 3
        if query.dim() not in (2, 3) or key.dim() != query.dim() or value.dim() != query.dim():
            raise ValueError(
                f"MultiheadAttention expects query, key, value all 3-D (batched) or all 2-D "
                f"(unbatched), got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
            )
        self_attention = query is key and key is value
        if not batched:
            query, key, value = (t.unsqueeze(0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:  # work batch-first: [N, L, E]
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        dtype = query.dtype
        q, k, v = self._project(query, key, value, self_attention)
        n, tgt, embed = q.shape
        mask = _additive(attn_mask, dtype, "attn_mask")
        padding = _additive(key_padding_mask, dtype, "key_padding_mask")
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(n, 1, embed)], 1)
            v = torch.cat([v, self.bias_v.expand(n, 1, embed)], 1)
            mask = None if mask is None else F.pad(mask, (0, 1))
            padding = None if padding is None else F.pad(padding, (0, 1))
        heads, head_dim = self.num_heads, self.head_dim
        q, k, v = (t.reshape(n, t.shape[1], heads, head_dim).transpose(1, 2) for t in (q, k, v))
        if self.add_zero_attn:
            zeros = k.new_zeros(n, heads, 1, head_dim)
            k, v = torch.cat([k, zeros], 2), torch.cat([v, zeros], 2)
            mask = None if mask is None else F.pad(mask, (0, 1))
            padding = None if padding is None else F.pad(padding, (0, 1))
        source = k.shape[2]
        if mask is not None:  # [L, S] or [N * heads, L, S]
            mask = mask.view(-1 if mask.dim() == 3 else 1, heads if mask.dim() == 3 else 1,
                             tgt, source)
        if padding is not None:
            padding = padding.view(n, 1, 1, source)
            mask = padding if mask is None else mask + padding
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q.matmul(k.transpose(-2, -1)) / math.sqrt(head_dim)
            if mask is not None:
                scores = scores + mask
            weights = F.dropout(scores.softmax(-1), p) if p > 0 else scores.softmax(-1)
            out = weights.matmul(v)
            if average_attn_weights:
                weights = weights.mean(1)
            if not batched:
                weights = weights.squeeze(0)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = self.out_proj(out.transpose(1, 2).reshape(n, tgt, embed))
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def _project(self, query, key, value, self_attention: bool):
        """q, k, v ``[N, L or S, E]``, each through its feedback rule."""
        fb = self.feedback
        if not self._qkv_same_embed_dim:
            biases = (self.in_proj_bias.chunk(3) if self.in_proj_bias is not None
                      else (None,) * 3)
            return tuple(fb[name].linear(x, b) for name, x, b in zip(
                ("q_proj_weight", "k_proj_weight", "v_proj_weight"), (query, key, value), biases))
        state = fb["in_proj_weight"]
        if self_attention:  # one GEMM; δ B sums the three blocks' contributions
            return state.linear(query, self.in_proj_bias).chunk(3, -1)
        return apply_autocast(_PackedProjection, (query, key, value, self.in_proj_weight,
                                                  self.in_proj_bias, state._stored_checked(),
                                                  state._draw_or_none()), state._rule())
