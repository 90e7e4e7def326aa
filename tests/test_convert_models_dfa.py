"""convert(model, "dfa") and convert(model, "lra") on the models people train now (GPT-2,
BERT, ViT, TransformerEncoder, a TransformerDecoder LM, LSTM and GRU classifiers from
tests/test_convert_models.py): where
DFA finds its blocks, that each model trains, and the DFA rule by value on a
TransformerEncoder in float64."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from test_convert_models import (
    CLASSES,
    IMAGE,
    LANGUAGE_MODELS,
    MODELS,
    PATCH,
    TOKENS,
    VOCAB,
    _batch,
    _loss,
    _model,
    three_steps,
)
from torch import nn

import fastcredit
from fastcredit.nn import dfa_points

# The module carrying each point: one per block; the last block's point moves on over the
# modules before the head (GPT-2's final LayerNorm), BERT's pooler is a block of its own
# (its point after the dropout that follows it), so is ViT's patch embedding (a Conv2d);
# an RNN's output sequence gets one.
POINTS = {
    "gpt2": ["transformer.h.0", "transformer.ln_f"],
    "bert": ["bert.encoder.layer.0", "bert.encoder.layer.1", "dropout"],
    "vit": ["vit.embeddings", "vit.layers.0", "vit.layernorm"],
    "encoder": ["encoder.layers.0", "encoder.layers.1"],
    "decoder": ["decoder.layers.0", "decoder.layers.1"],
    "lstm": ["rnn"],
    "gru": ["rnn"],
}
# with sublayers=True (TinyDFA): a point after each block's attention sublayer as well
ATTENTION = {
    "gpt2": ["transformer.h.0.attn", "transformer.h.1.attn"],
    "bert": ["bert.encoder.layer.0.attention", "bert.encoder.layer.1.attention"],
    "vit": ["vit.layers.0.attention", "vit.layers.1.attention"],
    "encoder": ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"],
    "decoder": ["decoder.layers.0.self_attn", "decoder.layers.1.self_attn"],  # the first one
}
# a weight of the first block, which only its DFA point's feedback trains
FIRST_BLOCK_WEIGHT = {
    "gpt2": "transformer.h.0.mlp.c_fc.weight",
    "bert": "bert.encoder.layer.0.intermediate.dense.weight",
    "vit": "vit.embeddings.patch_embeddings.projection.weight",
    "encoder": "encoder.layers.0.linear1.weight",
    "decoder": "decoder.layers.0.multihead_attn.in_proj_weight",
    "lstm": "rnn.weight_hh_l0",
    "gru": "rnn.weight_hh_l0",
}


def _hosts(model):
    return [p for p, m in model.named_modules() if isinstance(getattr(m, "dfa_point", None),
                                                                fastcredit.nn.DFAPoint)]


@pytest.mark.parametrize("name,sublayers", [(n, False) for n in MODELS]
                         + [(n, True) for n in ATTENTION])
def test_dfa_puts_a_point_on_every_block_and_trains(name, sublayers):
    model = fastcredit.convert(_model(name), "dfa", seed=1, sublayers=sublayers)
    expected = POINTS[name] + (ATTENTION[name] if sublayers else [])
    assert sorted(_hosts(model)) == sorted(expected)
    points = dfa_points(model)
    assert len(points) == len(expected)
    tokens, labels = _batch(name)
    weight = dict(model.named_parameters())[FIRST_BLOCK_WEIGHT[name]]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = _loss(name, model, tokens, labels)
        loss.backward()
        assert weight.grad is not None and weight.grad.abs().sum() > 0
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[0] != losses[-1]
    # token dims: causal-LM logits [N, T, V] have rows (0, 1); every sequence point's rows
    # are its batch and token dims, its features the hidden width
    output = points[0].output
    assert output.batch_dims == ((0, 1) if name in LANGUAGE_MODELS else (0,))
    width = 24 if name in ("lstm", "gru") else 16
    features = [p.features for p in points]
    if name == "vit":  # the patch embedding holds a conv: dense feedback over tokens x width
        assert features.pop(0) == ((IMAGE // PATCH) ** 2 + 1) * width
    assert features == [width] * len(features)
    if name in ("lstm", "gru"):  # per-time-step feedback on the output sequence
        assert points[0].batch_dims == (0, 1)


class _EncoderClassifier(nn.Module):
    def __init__(self, batch_first):
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Embedding(VOCAB, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, tokens):
        x = self.embed(tokens)
        if not self.batch_first:
            x = x.transpose(0, 1)  # [T, N, D]
        return self.head(self.encoder(x).mean(1 if self.batch_first else 0))


@pytest.mark.parametrize("batch_first", [True, False])
def test_a_hidden_transformer_block_gets_e_times_its_feedback_matrix(batch_first):
    """grad W of a hidden block = autograd through the block alone (from its input) of the
    block's output gradient e B_l, each example's row of e B_l spread over its tokens and
    divided by sqrt(T) (docs/methods.md, DFA); float64."""
    torch.manual_seed(0)
    model = fastcredit.convert(_EncoderClassifier(batch_first).double(), "dfa", seed=3)
    assert _hosts(model) == [f"encoder.layers.{i}" for i in range(3)]
    inputs = {}
    for i, layer in enumerate(model.encoder.layers):
        layer.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0]))
    model.head.register_forward_pre_hook(lambda m, args: inputs.__setitem__("head", args[0]))
    tokens, labels = _batch()
    logits = model(tokens)
    logits.retain_grad()
    F.cross_entropy(logits, labels).backward()
    e = logits.grad  # [N, C]
    for i, layer in enumerate(model.encoder.layers):
        point = layer.dfa_point
        assert point.batch_dims == ((0, 1) if batch_first else (1, 0))
        b = point.feedback_matrix(dtype=torch.float64)  # [C, D]
        signal = (e @ b) / math.sqrt(TOKENS)  # [N, D], the same for each token
        signal = signal.unsqueeze(1 if batch_first else 0).expand(inputs[i].shape)
        params = [layer.linear1.weight, layer.self_attn.in_proj_weight, layer.norm1.weight]
        # the block's own forward from its input (no point, no record)
        with fastcredit.nn.mode.backprop():
            h = layer(inputs[i].detach())
        expected = torch.autograd.grad(h, params, signal)
        for p, want in zip(params, expected):
            torch.testing.assert_close(p.grad, want, rtol=1e-10, atol=1e-12)
    # the head gets its true gradient
    torch.testing.assert_close(model.head.weight.grad, e.T @ inputs["head"].detach(),
                               rtol=1e-10, atol=1e-12)


@dataclasses.dataclass
class _Out:
    hidden: torch.Tensor
    aux: torch.Tensor


class _Block(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        if self.kind == "tuple":
            return h, h.sum(-1)
        return _Out(h, h.sum(-1))


class _Net(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.blocks = nn.ModuleList([_Block(kind), _Block(kind)])
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        aux = []
        for block in self.blocks:
            out = block(x)
            x, extra = (out if isinstance(out, tuple) else (out.hidden, out.aux))
            aux.append(extra)
        return self.head(x), aux


@pytest.mark.parametrize("kind", ["tuple", "dataclass"])
def test_blocks_returning_tuples_or_dataclasses_get_the_point_on_their_hidden_state(kind):
    torch.manual_seed(0)
    plain = _Net(kind)
    model = fastcredit.convert(_Net(kind), "dfa", seed=0)
    model.load_state_dict(plain.state_dict(), strict=False)
    assert _hosts(model) == ["blocks.0", "blocks.1"]
    x = torch.randn(5, 6)
    logits, aux = model(x)
    want_logits, want_aux = plain(x)
    torch.testing.assert_close(logits, want_logits)  # forward values unchanged
    torch.testing.assert_close(aux[1], want_aux[1])
    assert not aux[0].requires_grad  # the rest passes through detached
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 0, 1])).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_dfa_names_the_way_to_place_points_by_hand_where_it_finds_no_block():
    class Functional(nn.Module):  # activations as functions: no boundary in the module tree
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(x)))

    with pytest.raises(ValueError, match=r"found no hidden block.*DFAPoint\(\).*DFAOutput"):
        fastcredit.convert(Functional(), "dfa")
    with pytest.raises(ValueError, match="found no attention sublayer"):
        fastcredit.convert(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), "dfa",
                           sublayers=True)


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_error_at_head_input_projects_the_gradient_at_the_vocabulary_projection(name):
    """error_at="head_input" (Launay et al. 2020's LM placement): the output op sits on the
    head's input, whose true gradient e' [N, T, D] (through GPT-2's tied head) is what every
    point projects; the last block (GPT-2's second block and ln_f) gets e' B_l. float64."""
    model = fastcredit.convert(_model(name), "dfa", seed=1, error_at="head_input").double()
    assert sorted(_hosts(model)) == sorted(POINTS[name])
    points = dfa_points(model)
    output = points[0].output
    head = model.lm_head if name == "gpt2" else model.head
    seen = {}
    head.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    last = model.transformer.ln_f if name == "gpt2" else model.decoder.layers[1]
    last.register_forward_pre_hook(lambda m, args, kwargs: seen.update(args=args, kwargs=kwargs),
                                   with_kwargs=True)
    tokens, labels = _batch(name)
    loss = _loss(name, model, tokens, labels)
    seen["x"].retain_grad()
    loss.backward()
    assert output.num_outputs == 16 and output.batch_dims == (0, 1)
    e = seen["x"].grad
    assert e.shape == (4, TOKENS, 16) and e.abs().sum() > 0
    b = points[-1].feedback_matrix(dtype=torch.float64)  # [16, 16]
    signal = e @ b
    params = list(last.parameters())
    args, kwargs = torch.utils._pytree.tree_map_only(
        torch.Tensor, torch.Tensor.detach, (seen["args"], seen["kwargs"]))
    with fastcredit.nn.mode.backprop():
        h = last(*args, **kwargs)
    for p, want in zip(params, torch.autograd.grad(h, params, signal, allow_unused=True)):
        torch.testing.assert_close(p.grad, want, rtol=1e-10, atol=1e-12)
    (entry,) = [e for e in model.conversion_report.converted if "DFAOutput" in e.note]
    assert "on its input" in entry.note and "Launay" in entry.note
    # the default's report points at the cheaper placement when the output is the wider
    report = fastcredit.convert(_model(name), "dfa", seed=1).conversion_report
    (entry,) = [e for e in report.converted if "DFAOutput" in e.note]
    assert "after it (each point projects the 40-wide error; error_at='head_input'" in entry.note


def test_error_at_head_input_refuses_what_it_cannot_do():
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 5))
    with pytest.raises(ValueError, match="error_at.*'logits'"):
        fastcredit.convert(net, "dfa", error_at="logits", copy=True)
    with pytest.raises(ValueError, match="signal='error' only, not 'sign'"):
        fastcredit.convert(net, "dfa", error_at="head_input", signal="sign", copy=True)
    with pytest.raises(ValueError, match="in_features 8, got 5"):
        fastcredit.convert(net, "dfa", error_at="head_input", num_outputs=5, copy=True)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Conv2d(2, 3, 3))
    with pytest.raises(ValueError, match="needs a Linear head, got Conv2d"):
        fastcredit.convert(conv, "dfa", error_at="head_input", num_outputs=3)
    model = fastcredit.convert(net, "dfa", error_at="head_input", num_outputs=8)
    assert dfa_points(model)[0].output.num_outputs == 8


@pytest.mark.parametrize("name,culprit", [("gpt2", "Conv1D"), ("lstm", "LSTM"),
                                          ("decoder", "MultiheadAttention")])
def test_lra_names_a_module_it_cannot_handle(name, culprit):
    model = _model(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"has no LRA block for '[\w.]+' \({culprit}\)"):
        fastcredit.convert(model, "lra")
    assert not any(isinstance(m, fastcredit.nn.LRABlock) for m in model.modules())  # untouched
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("name", ["bert", "vit"])
def test_lra_converts_a_model_of_linear_and_conv_layers_norms_and_embeddings(name):
    """BERT's and ViT's weights are all Linear (attention's products, like residual additions,
    pass LRA's displacement through their ordinary backward), ViT's patch Conv2d, LayerNorm
    and embeddings (ViT's class token and positions among them)."""
    model = fastcredit.convert(_model(name), "lra")
    torch_layers = [m for m in model.modules() if type(m) in (nn.Linear, nn.Conv2d)]
    assert torch_layers == [] and any(isinstance(m, fastcredit.nn.LRAOutput)
                                      for m in model.modules())
    three_steps(name, model, torch.optim.SGD(model.parameters(), lr=0.05))


@pytest.mark.parametrize("name", MODELS)
def test_dfa_model_loads_a_plain_state_dict_strictly(name):
    plain = _model(name)
    with torch.no_grad():  # a "pretrained" file: weights different from the fresh ones
        for p in plain.parameters():
            p.mul_(2).add_(0.1)
    model = fastcredit.convert(_model(name), "dfa", seed=5)
    output = dfa_points(model)[0].output
    seed = output.seed.clone()
    model.load_state_dict(plain.state_dict(), strict=True)
    state = model.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(state[key], value), key
    assert torch.equal(output.seed, seed)  # the file lacks the seed: it keeps its own
    # a converted model's own file still carries (and restores) the DFA state
    other = fastcredit.convert(_model(name), "dfa", seed=6)
    other.load_state_dict(state, strict=True)
    assert torch.equal(dfa_points(other)[0].output.seed, seed)


def _hook_count(model):
    return {path: (len(m._forward_hooks), len(m._forward_pre_hooks))
            for path, m in model.named_modules()}


def _round_trip(name, method, make=None, **options):
    """convert then unconvert: the same Parameters, the plain hooks, a state_dict that loads
    strictly into the original architecture, and the original's outputs."""
    make = make or (lambda: _model(name))
    plain = make()
    before = _hook_count(plain)
    converted = fastcredit.convert(plain, method, **options)
    params = {id(p) for p in converted.parameters()}
    back = fastcredit.unconvert(converted)
    assert not any(type(m).__module__.startswith("fastcredit") for m in back.modules())
    assert _hook_count(back) == before and not hasattr(back, "conversion_report")
    assert params >= {id(p) for p in back.parameters()}  # LRA's E (a Parameter) is dropped
    original = make()
    original.load_state_dict(back.state_dict(), strict=True)
    assert [n for n, _ in back.named_modules()] == [n for n, _ in original.named_modules()]
    return back, original


@pytest.mark.parametrize("name", MODELS)
def test_unconvert_detaches_every_dfa_point(name):
    back, original = _round_trip(name, "dfa", seed=3, sublayers=name in ATTENTION)
    tokens, labels = _batch(name)
    back.eval(), original.eval()
    torch.testing.assert_close(_loss(name, back, tokens, labels),
                               _loss(name, original, tokens, labels))


def test_unconvert_keeps_hooks_that_are_not_dfa_s():
    model = fastcredit.convert(_model("encoder"), "dfa", error_at="head_input")
    seen = []
    model.head.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    back = fastcredit.unconvert(model)
    assert len(back.head._forward_pre_hooks) == 1 and not back.head._forward_hooks
    back(_batch("encoder")[0])
    assert seen == [torch.Size([4, 16])]


@pytest.mark.parametrize("name", ["mlp", "convnet", "bert", "vit"])
def test_unconvert_gives_lra_s_layers_and_folded_activations_back(name):
    """A flat Sequential gets its activation modules back in their slots; BERT and ViT
    (converted in place) their Linear and Conv layers."""
    nets = {"mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(),
                                         nn.Linear(8, 8), nn.LeakyReLU(0.2), nn.Linear(8, 3)),
            "convnet": lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
                                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(18, 3))}
    make = (lambda: (torch.manual_seed(0), nets[name]())[1]) if name in nets else None
    back, original = _round_trip(name, "lra", make)
    if name in nets:
        assert [type(m) for m in back] == [type(m) for m in original]
        x = torch.randn(5, 1, 6, 6) if name == "convnet" else torch.randn(5, 12)
        torch.testing.assert_close(back(x), original(x))
        if name == "mlp":
            assert back[4].negative_slope == 0.2
    else:
        tokens, labels = _batch(name)
        back.eval(), original.eval()
        torch.testing.assert_close(_loss(name, back, tokens, labels),
                                   _loss(name, original, tokens, labels))


def test_unconvert_refuses_fastcredit_modules_convert_did_not_make():
    with pytest.raises(ValueError, match="applies 'tanh' itself and was not made by convert"):
        fastcredit.unconvert(fastcredit.nn.LRA([4, 3, 2]))
    point = fastcredit.nn.DFAPoint()
    by_hand = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), point, nn.Linear(3, 2),
                            fastcredit.nn.DFAOutput([point], 2))
    with pytest.raises(ValueError, match=r"'\d' \(DFAPoint\) was not made by convert"):
        fastcredit.unconvert(by_hand)


@pytest.mark.parametrize("first,second,what", [
    ("fa", "kp", "'kp'.*already a 'fa' layer"), ("dfa", "fa", "already converted to 'dfa'"),
    ("dfa", "dfa", "already converted to 'dfa'"), ("fa", "dfa", "already a 'fa' layer"),
    ("fa", "lra", "already a 'fa' layer"), ("kp", "usf", "already a 'kp' layer")])
def test_a_converted_model_is_not_converted_again_to_another_rule(first, second, what):
    model = fastcredit.convert(_model("bert" if second == "lra" else "decoder"), first)
    with pytest.raises(ValueError, match=f"{what}.*call fastcredit.unconvert"):
        fastcredit.convert(model, second)
    assert not fastcredit.nn.mode.backprop_active()
    again = fastcredit.convert(fastcredit.unconvert(model), second)  # the way out
    assert again.conversion_report.method == second


def test_layers_of_the_same_method_are_kept_so_a_model_can_be_finished():
    model = _model("encoder")
    model.head = fastcredit.convert(model.head, "fa")
    head = model.head
    converted = fastcredit.convert(model, "fa")
    assert converted.head is head
    assert ("head", "Linear", "already a fastcredit module") in [
        (e.path, e.kind, e.note) for e in converted.conversion_report.unchanged]


def test_unconvert_refuses_to_lose_hooks_on_the_layers_it_replaces():
    model = fastcredit.convert(_model("encoder"), "fa")
    handle = model.head.register_forward_hook(lambda *args: None)
    with pytest.raises(ValueError, match=r"'head' \(Linear\) carries hooks"):
        fastcredit.unconvert(model, copy=True)
    handle.remove()
    net = fastcredit.convert(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)), "lra")
    net[1].register_forward_pre_hook(lambda *args: None)  # the slot the tanh goes back to
    with pytest.raises(ValueError, match=r"'1' \(Identity\) carries hooks"):
        fastcredit.unconvert(net)


def test_sequence_first_points_whose_batch_equals_the_sequence_length_are_refused():
    """[T, N, D] under a pooled [N, C] output with T == N: sizes cannot tell which dim holds
    the examples, and guessing would feed each example another one's signal."""
    model = fastcredit.convert(_EncoderClassifier(batch_first=False), "dfa", seed=3)
    tokens = torch.randint(0, VOCAB, (TOKENS, TOKENS))
    with pytest.raises(ValueError, match="is ambiguous; use a batch size that differs"):
        model(tokens)
    tokens = torch.randint(0, VOCAB, (TOKENS + 1, TOKENS))  # N != T: found automatically
    assert model(tokens).shape == (TOKENS + 1, CLASSES)


@pytest.mark.parametrize("error_at", ["output", "head_input"])
def test_a_llama_gets_its_last_point_after_its_final_norm_not_on_its_rotary_embedding(error_at):
    """LlamaModel registers its rotary embedding after its final norm but runs it before the
    layers: a point moving on over the modules after the last block must stop at the norm."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                      num_attention_heads=2, num_key_value_heads=2,
                                      vocab_size=VOCAB)
    torch.manual_seed(0)
    model = fastcredit.convert(transformers.LlamaForCausalLM(config), "dfa", seed=1,
                               error_at=error_at)
    assert _hosts(model) == ["model.layers.0", "model.layers.1", "model.norm"]
    tokens = torch.randint(0, VOCAB, (4, TOKENS))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        assert model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
