"""DFA's norm fold (fastcredit/convert/fold.py): where a norm's input carries no gradient (the
block after a DFA point), the weight layer it feeds computes no input gradient, and every
gradient equals autograd's through the plain norm and layer (float64). Checked on the fold
itself, on a converted GPT-2's hidden block against the DFA rule, and by FLOP count."""

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastcredit
from fastcredit.app.bench import step_costs
from fastcredit.convert import fold
from fastcredit.convert.dfa import _remove_hooks

F64 = torch.float64
ROWS, TOKENS, WIDTH, OUT = 3, 7, 13, 11  # no tile-size multiples


def _conv1d(width, out):
    transformers = pytest.importorskip("transformers")
    return transformers.pytorch_utils.Conv1D(out, width)


NORMS = {
    "layernorm": lambda: nn.LayerNorm(WIDTH),
    "layernorm-nobias": lambda: nn.LayerNorm(WIDTH, bias=False),
    "rmsnorm": lambda: nn.RMSNorm(WIDTH),
}
LAYERS = {
    "linear": lambda: nn.Linear(WIDTH, OUT),
    "linear-nobias": lambda: nn.Linear(WIDTH, OUT, bias=False),
    "conv1d": lambda: _conv1d(WIDTH, OUT),  # transformers' GPT-2 layer: weight [in, out]
}


class _PreNorm(nn.Module):
    """tanh(layer(norm(x))): the start of a pre-norm block."""

    def __init__(self, norm, layer):
        super().__init__()
        self.norm, self.layer = norm, layer

    def forward(self, x):
        return torch.tanh(self.layer(self.norm(x)))


def _pair(norm, layer, seed=0):
    torch.manual_seed(seed)
    return _affine(_PreNorm(NORMS[norm](), LAYERS[layer]()).to(F64))


def _grads(block, x, dy):
    params = [p for p in block.parameters() if p.requires_grad]
    return torch.autograd.grad(block(x), params, dy)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("norm", NORMS)
def test_the_fold_gives_autograd_s_forward_and_gradients(norm, layer):
    plain, folded = _pair(norm, layer), _pair(norm, layer)
    slot = fold.attach_fold([folded.norm, folded.layer])
    assert slot is not None
    g = torch.Generator().manual_seed(1)
    x = torch.randn(ROWS, TOKENS, WIDTH, generator=g, dtype=F64)  # carries no gradient
    dy = torch.randn(ROWS, TOKENS, OUT, generator=g, dtype=F64)
    y = folded(x)
    assert type(y.grad_fn).__name__ == "TanhBackward0"
    assert type(y.grad_fn.next_functions[0][0]).__name__ == "_FoldedProductBackward"
    assert torch.equal(y, plain(x))  # the layer's own forward: the same values, bit for bit
    for got, want in zip(_grads(folded, x, dy), _grads(plain, x, dy)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("frozen", ["layer.weight", "norm.weight", "layer.bias"])
def test_frozen_parameters_get_no_gradient_and_the_others_autograd_s(frozen):
    plain, folded = _pair("layernorm", "linear"), _pair("layernorm", "linear")
    fold.attach_fold([folded.norm, folded.layer])
    for block in (plain, folded):
        block.get_parameter(frozen).requires_grad_(False)
    x, dy = torch.randn(5, WIDTH, dtype=F64), torch.randn(5, OUT, dtype=F64)
    for got, want in zip(_grads(folded, x, dy), _grads(plain, x, dy), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_the_fold_stays_off_where_it_would_change_the_rule():
    """An input that carries a gradient (the first block), autocast and no_grad run the
    layers as they are; a second consumer of the norm's output still gets its gradient to
    the norm through the norm's own backward."""
    block = _pair("layernorm", "linear")
    fold.attach_fold([block.norm, block.layer])

    def product_node(x):
        return block(x).grad_fn.next_functions[0][0]

    x = torch.randn(4, WIDTH, dtype=F64)
    assert type(product_node(x.clone().requires_grad_())).__name__ == "AddmmBackward0"
    block.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert type(product_node(x.float())).__name__ != "_FoldedProductBackward"
    assert type(product_node(x.float())).__name__ == "_FoldedProductBackward"
    block.double()
    with torch.no_grad():
        assert block(x).grad_fn is None
    assert type(product_node(x)).__name__ == "_FoldedProductBackward"
    y = block.norm(x)
    y.retain_grad()  # the caller wants this gradient
    assert type(block.layer(y).grad_fn).__name__ == "AddmmBackward0"
    seen = []
    y = block.norm(x)
    y.register_hook(seen.append)  # a hook waits for it too
    block.layer(y).sum().backward()
    assert len(seen) == 1
    # a second consumer: the norm's output also added to the result
    folded = _pair("layernorm", "linear")  # block's parameters were rounded to float32
    fold.attach_fold([folded.norm, folded.layer])
    twice = {"plain": _pair("layernorm", "linear"), "folded": folded}
    got = {}
    for name, b in twice.items():
        y = b.norm(x)
        out = torch.tanh(b.layer(y)) + y[:, :OUT] ** 2
        got[name] = torch.autograd.grad(out.sum(), list(b.parameters()))
    for a, b in zip(got["folded"], got["plain"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _gpt2(layers=3):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=layers, n_embd=16, n_head=2, vocab_size=40,
                                     n_positions=TOKENS, resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).to(F64)


def test_a_converted_gpt2_block_gets_e_times_its_feedback_matrix_through_the_fold():
    """GPT-2's second block (pre-norm: ln_1 -> c_attn) after a point: its parameters'
    gradients equal autograd, through an unconverted copy of the block from its detached
    input, of e B_l (e at the logits, every token a row), and ln_1's gamma and beta among
    them."""
    plain = _gpt2()
    model = fastcredit.convert(copy.deepcopy(plain), "dfa", seed=3)
    block = model.transformer.h[1]
    seen = {}
    block.register_forward_pre_hook(lambda m, args, kwargs: seen.update(args=args, kwargs=kwargs),
                                    with_kwargs=True)
    tokens = torch.randint(0, 40, (ROWS, TOKENS), generator=torch.Generator().manual_seed(2))
    logits = model(input_ids=tokens, use_cache=False).logits  # the twin runs without a cache
    logits.retain_grad()
    F.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
    assert not seen["args"][0].requires_grad  # cut by the previous block's point
    signal = logits.grad @ block.dfa_point.feedback_matrix(dtype=F64)  # [N, T, D]
    twin = plain.transformer.h[1]  # the causal mask and positions as the block got them
    params = dict(twin.named_parameters())
    h = twin(*seen["args"], **seen["kwargs"])
    expected = torch.autograd.grad(h, list(params.values()), signal)
    for (name, param), want in zip(params.items(), expected):
        torch.testing.assert_close(block.get_parameter(name).grad, want, rtol=1e-10,
                                   atol=1e-12)
    assert block.ln_1.weight.grad.abs().sum() > 0


def _step_flops(model, tokens):
    return step_costs(lambda: model(input_ids=tokens, labels=tokens).loss.backward())[0]


def test_the_fold_saves_exactly_each_hidden_block_s_first_input_gradient():
    """By FLOP count on a 3-block GPT-2: blocks 1 and 2 start after a point, so each skips
    c_attn's input gradient, rows x 3D x D multiply-adds; nothing else changes."""
    plain = _gpt2()
    folded = fastcredit.convert(copy.deepcopy(plain), "dfa", seed=3)
    unfolded = fastcredit.convert(copy.deepcopy(plain), "dfa", seed=3)
    _unfold(unfolded)
    tokens = torch.randint(0, 40, (ROWS, TOKENS))
    width = 16
    saved = 2 * ROWS * TOKENS * 3 * width * width * 2  # two blocks, 2 FLOPs a multiply-add
    assert _step_flops(unfolded, tokens) - _step_flops(folded, tokens) == saved
    for a, b in zip(folded.parameters(), unfolded.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_copies_and_pickles_of_a_converted_model_fold_on_their_own_layers():
    model = fastcredit.convert(_gpt2(2), "dfa", seed=3)
    tokens = torch.randint(0, 40, (ROWS, TOKENS))
    for other in (copy.deepcopy(model), _pickled(model)):
        layer = other.transformer.h[1].attn.c_attn
        assert isinstance(layer, fold._Folding) and type(layer).__name__ == "Conv1D"
        assert layer.__dict__["_dfa_fold"] is other.transformer.h[1].ln_1.__dict__["_dfa_fold"]
        for m in (model, other):
            m.zero_grad()
            m(input_ids=tokens, labels=tokens).loss.backward()
        for a, b in zip(model.parameters(), other.parameters()):
            assert torch.equal(a.grad, b.grad)


def _pickled(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_unconvert_removes_the_fold():
    model = fastcredit.convert(_gpt2(2), "dfa", seed=3)
    assert isinstance(model.transformer.h[1].attn.c_attn, fold._Folding)
    back = fastcredit.unconvert(model)
    for m in back.modules():
        assert not isinstance(m, fold._Folding) and "_dfa_fold" not in m.__dict__
        assert not m._forward_hooks


def test_the_report_says_where_norms_fold():
    report = fastcredit.convert(_gpt2(2), "dfa", seed=3).conversion_report
    (entry,) = [e for e in report.unchanged if e.path == "transformer.h.1.ln_1"]
    assert "its affine folds into the Linear/Conv1D it feeds" in entry.note
    notes = [e.path for e in report.unchanged if "folds into" in e.note]
    assert notes == ["transformer.h.1.ln_1"]  # not block 0 (embeddings), not ln_2


# ---- what must not fold, or must fold on the right module ----------------------------------
def _unfold(model):
    for module in model.modules():
        fold.remove_fold(module, _remove_hooks)
    assert not any(isinstance(m, fold._Folding) for m in model.modules())
    return model


class _PointThenNorm(nn.Module):
    """Linear, ReLU, then a stage (LayerNorm, ..., Linear) after a point, then the head."""

    def __init__(self, norm=None, middle=None):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.act = nn.ReLU()
        self.norm = norm or nn.LayerNorm(8)
        self.middle = middle or nn.Identity()
        self.inner = nn.Linear(8, 8)
        self.act2 = nn.Tanh()
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.act(self.fc(x))
        return self.head(self.act2(self.inner(self.middle(self.norm(h)))))


class _ScaledLayerNorm(nn.LayerNorm):
    """A subclass computing something else: gamma is 1 + weight."""

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, 1 + self.weight, self.bias, self.eps)


class _Double(nn.Module):
    def forward(self, h):
        return h.mul_(2)  # in place on the norm's output


def _hook_doubling(net):
    net.norm.register_forward_hook(lambda m, args, out: 2 * out)
    return net


CORNERS = {
    "in-place on the norm's output": lambda: _PointThenNorm(middle=_Double()),
    "in-place dropout": lambda: _PointThenNorm(middle=nn.Dropout(0.5, inplace=True)),
    "a norm subclass": lambda: _PointThenNorm(norm=_ScaledLayerNorm(8)),
    "a hook replacing the norm's output": lambda: _hook_doubling(_PointThenNorm()),
    "plain": _PointThenNorm,
}


def _affine(net):
    """``net`` with its norm's affine moved away from (1, 0), so a wrong gamma/beta term
    shows."""
    with torch.no_grad():
        for p in net.norm.parameters():
            p.add_(torch.randn_like(p))
    return net


@pytest.mark.parametrize("corner", CORNERS)
def test_cases_the_fold_must_leave_alone_keep_their_gradients(corner):
    """The same converted model with and without the fold: the same gradients (the point sits
    on the ReLU, so the norm's input carries no gradient)."""
    torch.manual_seed(0)
    folded = fastcredit.convert(_affine(CORNERS[corner]()).to(F64), "dfa", seed=1,
                                placement="after_activation")
    unfolded = _unfold(copy.deepcopy(folded))
    x, y = torch.randn(8, 6, dtype=F64), torch.randint(0, 3, (8,))
    for model in (folded, unfolded):
        torch.manual_seed(5)  # the same dropout mask
        F.cross_entropy(model(x), y).backward()
    for a, b in zip(folded.parameters(), unfolded.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    assert folded.norm.weight.grad.abs().sum() > 0


def test_a_global_hook_replacing_the_norm_s_output_is_respected():
    def double(module, args, output):
        return 2 * output if isinstance(module, nn.LayerNorm) else None

    torch.manual_seed(0)
    folded = fastcredit.convert(_affine(_PointThenNorm()).to(F64), "dfa", seed=1,
                                placement="after_activation")
    unfolded = _unfold(copy.deepcopy(folded))
    x, y = torch.randn(8, 6, dtype=F64), torch.randint(0, 3, (8,))
    handle = nn.modules.module.register_module_forward_hook(double)
    try:
        for model in (folded, unfolded):
            F.cross_entropy(model(x), y).backward()
    finally:
        handle.remove()
    for a, b in zip(folded.parameters(), unfolded.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_a_forward_wrapper_on_the_layer_is_kept_and_survives_unconvert():
    """accelerate's dispatch hooks replace an instance's forward: one set before convert still
    runs (the layer is then not folded), one set after convert still works after
    unconvert."""
    net = _PointThenNorm().to(F64)
    calls = []
    own = net.inner.forward
    net.inner.forward = lambda h: (calls.append(1), own(h))[1]
    model = fastcredit.convert(net, "dfa", placement="after_activation")
    model(torch.randn(2, 6, dtype=F64)).sum().backward()
    assert calls == [1]
    model = fastcredit.convert(_PointThenNorm().to(F64), "dfa", placement="after_activation")
    own = model.inner.forward  # the folding forward, bound
    model.inner.forward = lambda h: own(h)
    back = fastcredit.unconvert(model)
    x = torch.randn(2, 6, dtype=F64)
    torch.testing.assert_close(back(x), back.head(torch.tanh(back.inner.__class__.forward(
        back.inner, back.norm(torch.relu(back.fc(x)))))))


def test_a_replica_folds_with_its_own_weights():
    """nn.DataParallel's replicas share the instance dict but hold their own Parameters."""
    model = fastcredit.convert(_PointThenNorm().to(F64), "dfa", placement="after_activation")
    replica = model.inner._replicate_for_data_parallel()
    replica.weight = nn.Parameter(torch.zeros(8, 8, dtype=F64))
    replica.bias = nn.Parameter(torch.zeros(8, dtype=F64))
    h = model.norm(torch.rand(3, 8, dtype=F64))  # recorded: its input carries no gradient
    assert torch.equal(replica(h), torch.zeros(3, 8, dtype=F64))


def test_a_forward_that_stopped_half_way_leaves_a_model_that_copies_and_trains():
    model = fastcredit.convert(_PointThenNorm().to(F64), "dfa", placement="after_activation")
    handle = model.act2.register_forward_hook(lambda *args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        model(torch.randn(2, 6, dtype=F64))
    handle.remove()
    twin = copy.deepcopy(model)
    x, y = torch.randn(4, 6, dtype=F64), torch.randint(0, 3, (4,))
    for m in (model, twin):
        F.cross_entropy(m(x), y).backward()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a.grad, b.grad)


def test_alignment_diagnostics_see_the_norm_s_signal():
    """diagnostics.alignment hooks the norm's output's gradient: with a hook on it, the layer
    does not fold, so the signal there is the rule's, as without the fold."""
    from fastcredit.diagnostics import alignment
    torch.manual_seed(0)
    model = fastcredit.convert(_affine(_PointThenNorm()).to(F64), "dfa", seed=1,
                               placement="after_activation")
    x, y = torch.randn(8, 6, dtype=F64), torch.randint(0, 3, (8,))
    got = alignment(model, x, y)["norm"]
    want = alignment(_unfold(copy.deepcopy(model)), x, y)["norm"]
    assert math.isfinite(got["signal_cosine"])
    for key in ("signal_cosine", "update_cosine"):
        assert math.isclose(got[key], want[key], rel_tol=1e-9), key
