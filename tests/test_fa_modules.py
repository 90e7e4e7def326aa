"""The FA family's multi-matrix and transposed-layout modules (transformers-style Conv1D,
ConvTranspose, MultiheadAttention, RNN/LSTM/GRU): with every feedback matrix set to its
weight (B := W), forward values and every gradient (all parameters and the inputs) equal the
plain torch module's autograd (backprop, BPTT) in float64; with a random B the input gradient
is δ B."""


import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastcredit
from fastcredit.nn import FeedbackLayer

F64 = torch.float64


class Conv1D(nn.Module):
    """Stand-in with transformers' Conv1D contract (weight [nx, nf], y = x W + b), so the
    recognition is tested without transformers installed."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(
            *x.shape[:-1], self.nf)


def _feedback_is_weight(model):
    """Set every stored B of a converted model to its W (feedback := W)."""
    layers = [m for m in model.modules() if isinstance(m, FeedbackLayer)]
    assert layers
    for layer in layers:
        layer.set_feedback_(layer.weight.detach())
    return layers


def _gradients(model, inputs, outputs_of):
    model.zero_grad(set_to_none=True)
    inputs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    outs = outputs_of(model, *inputs)
    generator = torch.Generator().manual_seed(7)
    loss = sum((o * torch.randn(o.shape, dtype=F64, generator=generator)).sum() for o in outs)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return outs, grads, [x.grad for x in inputs if x.requires_grad]


def _assert_equivalent(plain, inputs, outputs_of=lambda m, *x: [m(*x)]):
    """convert(plain, "fa") with B := W gives plain's outputs and gradients."""
    plain = plain.double()
    fast = fastcredit.convert(plain, "fa", copy=True)
    assert not any(type(m) is type(p) for m in fast.modules() for p in plain.modules()
                   if isinstance(p, (nn.MultiheadAttention, nn.RNNBase, Conv1D,
                                     nn.modules.conv._ConvTransposeNd)))
    _feedback_is_weight(fast)
    out_p, grads_p, in_p = _gradients(plain, inputs, outputs_of)
    out_f, grads_f, in_f = _gradients(fast, inputs, outputs_of)
    for a, b in zip(out_f, out_p):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert grads_f.keys() == grads_p.keys()
    for name in grads_p:
        torch.testing.assert_close(grads_f[name], grads_p[name], rtol=1e-9, atol=1e-11,
                                   msg=name)
    assert len(in_f) == len(in_p) > 0
    for a, b in zip(in_f, in_p):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    return fast


def _x(*shape, seed=0):
    return torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def test_conv1d_equivalence_and_feedback_orientation():
    torch.manual_seed(0)
    fast = _assert_equivalent(nn.Sequential(Conv1D(5, 3), nn.Tanh(), Conv1D(4, 5)),
                              [_x(2, 6, 3)])
    assert isinstance(fast[0], fastcredit.nn.Conv1D) and fast[0].nf == 5 and fast[0].nx == 3
    # random B: the input gradient is δ Bᵀ with B in W's layout [in, out]
    layer = fastcredit.nn.Conv1D(4, 3, dtype=F64, seed=11)
    x, delta = _x(5, 3).requires_grad_(), _x(5, 4, seed=1)
    layer(x).backward(delta)
    torch.testing.assert_close(x.grad, delta @ layer.feedback_weight.t())
    torch.testing.assert_close(layer.weight.grad, x.detach().t() @ delta)
    # its draws are those of the Linear (nx -> nf) with the same seed, transposed
    for method, feedback in (("fa", "stored"), ("fa", "seeded"), ("frsf", "stored"),
                             ("frsf", "seeded"), ("brsf", None), ("usf", None)):
        seed = None if method == "usf" else 3
        conv = fastcredit.nn.Conv1D(4, 3, dtype=F64, method=method, feedback=feedback,
                                    seed=seed)
        linear = fastcredit.nn.Linear(3, 4, dtype=F64, method=method, feedback=feedback,
                                      seed=seed)
        with torch.no_grad():
            linear.weight.copy_(conv.weight.t())
        torch.testing.assert_close(conv.feedback_matrix().t(), linear.feedback_matrix())


@pytest.mark.parametrize("d", [1, 2, 3])
def test_conv_transpose_equivalence(d):
    torch.manual_seed(d)
    cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[d]
    model = nn.Sequential(cls(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
                          nn.Tanh(), cls(6, 3, 2, dilation=2, bias=False))
    _assert_equivalent(model, [_x(2, 4, *([3] * d))])
    # output_size and unbatched input take torch's paths too
    single = cls(4, 2, 3, stride=2)
    _assert_equivalent(single, [_x(4, *([3] * d))],
                       lambda m, x: [m(x, output_size=[8] * d)])


def test_conv_transpose_random_feedback_is_convolution_with_b():
    layer = fastcredit.nn.ConvTranspose2d(3, 4, 3, stride=2, dtype=F64, seed=5)
    x, = [_x(2, 3, 4, 4).requires_grad_()]
    out = layer(x)
    delta = _x(*out.shape, seed=2)
    out.backward(delta)
    expected = F.conv2d(delta, layer.feedback_weight, stride=2)  # the adjoint with B for W
    torch.testing.assert_close(x.grad, expected)


def _attention_call(**kwargs):
    def call(m, q, k, v, *masks):
        names = [n for n in ("attn_mask", "key_padding_mask") if n in kwargs]
        masks = dict(zip(names, masks)) if masks else {n: kwargs[n] for n in names}
        extra = {k2: v2 for k2, v2 in kwargs.items() if k2 not in names}
        out, weights = m(q, k, v, **masks, **extra)
        return [out] + ([weights] if weights is not None else [])
    return call


@pytest.mark.parametrize("config", [
    dict(batch_first=True),
    dict(batch_first=False, bias=False, need_weights=True, average_attn_weights=False),
    dict(batch_first=True, add_bias_kv=True, add_zero_attn=True, need_weights=False),
    dict(batch_first=True, kdim=3, vdim=7, cross=True),
    dict(batch_first=False, cross=True),
    dict(batch_first=True, masks=True, need_weights=False),
    dict(batch_first=True, masks=True, add_bias_kv=True, need_weights=True),
    dict(batch_first=True, unbatched=True),
])
def test_multihead_attention_equivalence(config):
    config = dict(config)
    torch.manual_seed(0)
    cross, masks, unbatched = (config.pop(k, False) for k in ("cross", "masks", "unbatched"))
    call = {k: config.pop(k) for k in ("need_weights", "average_attn_weights") if k in config}
    mha = nn.MultiheadAttention(8, 2, **config)
    n, tgt, src = 3, 4, 5 if cross else 4
    shape = (lambda length, dim: (n, length, dim)) if config["batch_first"] else (
        lambda length, dim: (length, n, dim))
    if unbatched:
        shape = lambda length, dim: (length, dim)  # noqa: E731
    query = _x(*shape(tgt, 8))
    key = _x(*shape(src, config.get("kdim") or 8), seed=1)
    value = _x(*shape(src, config.get("vdim") or 8), seed=2)
    if masks:
        causal = torch.triu(torch.ones(tgt, src, dtype=torch.bool), 1)
        padding = torch.zeros(n, src, dtype=torch.bool)
        padding[0, -1] = True
        call.update(attn_mask=causal, key_padding_mask=padding)
    if cross:
        _assert_equivalent(mha, [query, key, value], _attention_call(**call))
    else:  # self-attention: the one tensor is query, key and value
        _assert_equivalent(mha, [query], lambda m, x: _attention_call(**call)(m, x, x, x))


def test_multihead_attention_float_mask_and_transformer_encoder():
    torch.manual_seed(1)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    mask = nn.Transformer.generate_square_subsequent_mask(5, dtype=F64)  # float -inf mask
    fast = _assert_equivalent(encoder, [_x(2, 5, 8)],
                              lambda m, x: [m(x, mask=mask, is_causal=True)])
    assert all(isinstance(lay.self_attn, fastcredit.nn.MultiheadAttention)
               for lay in fast.layers)


def test_multihead_attention_random_feedback_projects_through_b():
    torch.manual_seed(2)
    mha = fastcredit.nn.MultiheadAttention(6, 2, batch_first=True, dtype=F64, seed=1)
    x = _x(2, 3, 6).requires_grad_()
    out, _ = mha(x, x, x, need_weights=False)
    delta = _x(*out.shape, seed=3)
    out.backward(delta)
    # the same forward with the projections' input gradient rerouted by hand through B
    b_in, b_out = mha.feedback["in_proj_weight"].feedback_weight, mha.out_proj.feedback_weight
    x2 = x.detach().clone().requires_grad_()
    qkv = _RerouteLinear.apply(x2, mha.in_proj_weight, mha.in_proj_bias, b_in)
    q, k, v = (t.view(2, 3, 2, 3).transpose(1, 2) for t in qkv.chunk(3, -1))
    attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 3, 6)
    _RerouteLinear.apply(attended, mha.out_proj.weight, mha.out_proj.bias, b_out).backward(delta)
    torch.testing.assert_close(x.grad, x2.grad)


class _RerouteLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, feedback):
        ctx.save_for_backward(feedback)
        return F.linear(x, w, b)

    @staticmethod
    def backward(ctx, grad):
        feedback, = ctx.saved_tensors
        return grad @ feedback, None, None, None


@pytest.mark.parametrize("cls,extra", [
    (nn.RNN, {}), (nn.RNN, {"nonlinearity": "relu", "bias": False}),
    (nn.LSTM, {}), (nn.LSTM, {"proj_size": 3}), (nn.GRU, {}),
])
@pytest.mark.parametrize("batch_first", [False, True])
def test_recurrent_equivalence_with_bptt(cls, extra, batch_first):
    torch.manual_seed(3)
    rnn = cls(4, 5, num_layers=2, bidirectional=True, batch_first=batch_first, **extra)
    seq = _x(2, 6, 4) if batch_first else _x(6, 2, 4)

    def outputs(m, x, *state):
        out, final = m(x, *state)
        return [out, *(final if isinstance(final, tuple) else (final,))]

    _assert_equivalent(rnn, [seq], outputs)
    # given initial states, and an unbatched sequence
    out_size = extra.get("proj_size") or 5
    h0 = _x(4, 2, out_size, seed=4)
    if cls is nn.LSTM:
        c0 = _x(4, 2, 5, seed=5)
        _assert_equivalent(rnn, [seq, h0, c0], lambda m, x, h, c: outputs(m, x, (h, c)))
    else:
        _assert_equivalent(rnn, [seq, h0], outputs)
    _assert_equivalent(rnn, [_x(6, 4)], outputs)


def test_recurrent_rejects_packed_sequences():
    lstm = fastcredit.nn.LSTM(3, 4)
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 3), [5, 3])
    with pytest.raises(TypeError, match="PackedSequence"):
        lstm(packed)


def test_recurrent_random_feedback_changes_only_the_delivered_error():
    """With B ≠ W the weight gradients differ from BPTT's except the last step's output layer
    contributions: here, a one-step RNN, whose W_hh never acts, gives W_ih its true
    gradient and the input δ B_ih."""
    rnn = fastcredit.nn.RNN(3, 4, dtype=F64, seed=9)
    x = _x(1, 2, 3).requires_grad_()
    out, _ = rnn(x)
    delta = _x(*out.shape, seed=6)
    out.backward(delta)
    local = delta * (1 - out.detach() ** 2)  # tanh'
    b_ih = rnn.feedback["weight_ih_l0"].feedback_weight
    torch.testing.assert_close(x.grad, local @ b_ih)
    torch.testing.assert_close(rnn.weight_ih_l0.grad, local[0].t() @ x.detach()[0])
