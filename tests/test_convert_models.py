"""convert on the models people train now, built from configs (no downloads): transformers'
GPT-2, BERT and ViT (skipped when transformers is absent), torch's TransformerEncoder, a
TransformerDecoder language model, LSTM and GRU classifiers. Every FA-family method trains
three steps with a finite loss; the report's shares leave nothing but embeddings (ViT's
learnt tokens among them) and normalisation to backprop; B := W reproduces backprop's
gradients; plain state_dicts load with strict=True and unconvert gives back a
model whose state_dict loads into the original architecture."""


import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastcredit
from fastcredit._spec import FEEDBACK_METHODS
from fastcredit.nn import FeedbackLayer
from fastcredit.optim import KolenPollack

VOCAB, TOKENS, CLASSES = 40, 6, 3
IMAGE, PATCH = 8, 4  # ViT: 4 patches and the class token
LANGUAGE_MODELS = ("gpt2", "decoder")  # logits [N, T, VOCAB], next-token loss
# Parameters added to or concatenated with ViT's token sequence: embeddings, like nn.Embedding's
LEARNT_TOKENS = ("cls_token", "position_embeddings")


class EncoderClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens)).mean(1))


class DecoderLM(nn.Module):
    """A decoder language model: causal self-attention over the tokens, cross-attention to a
    memory (the reversed tokens, embedded by a table of its own)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.source = nn.Embedding(VOCAB, 16)
        layer = nn.TransformerDecoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, 2)
        self.head = nn.Linear(16, VOCAB)

    def forward(self, tokens):
        x = self.embed(tokens)
        mask = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1], dtype=x.dtype)
        memory = self.source(tokens.flip(1))
        return self.head(self.decoder(x, memory, tgt_mask=mask, tgt_is_causal=True))


class RecurrentClassifier(nn.Module):
    def __init__(self, cls):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        self.rnn = cls(8, 12, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(24, CLASSES)

    def forward(self, tokens):
        return self.head(self.rnn(self.embed(tokens))[0][:, -1])


def _gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=VOCAB,
                                     n_positions=TOKENS, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def _bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=TOKENS, num_labels=CLASSES)
    return transformers.BertForSequenceClassification(config)


def _vit():
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=IMAGE, patch_size=PATCH, num_channels=1,
                                    hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=32, num_labels=CLASSES)
    return transformers.ViTForImageClassification(config)


MODELS = {
    "gpt2": _gpt2,
    "bert": _bert,
    "vit": _vit,
    "encoder": EncoderClassifier,
    "decoder": DecoderLM,
    "lstm": lambda: RecurrentClassifier(nn.LSTM),
    "gru": lambda: RecurrentClassifier(nn.GRU),
}


def _batch(name=""):
    """(inputs, labels): token ids, or images [4, 1, IMAGE, IMAGE] for ViT."""
    generator = torch.Generator().manual_seed(0)
    inputs = (torch.randn(4, 1, IMAGE, IMAGE, generator=generator) if name == "vit"
              else torch.randint(0, VOCAB, (4, TOKENS), generator=generator))
    return inputs, torch.randint(0, CLASSES, (4,), generator=generator)


def _loss(name, model, tokens, labels):
    if name == "gpt2":
        return model(input_ids=tokens, labels=tokens).loss
    if name == "bert":
        return F.cross_entropy(model(input_ids=tokens).logits, labels)
    if name == "vit":
        images = tokens.to(next(model.parameters()).dtype)
        return F.cross_entropy(model(pixel_values=images).logits, labels)
    if name == "decoder":  # next-token prediction
        return F.cross_entropy(model(tokens)[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    return F.cross_entropy(model(tokens), labels)


def _model(name):
    torch.manual_seed(0)
    return MODELS[name]()


def three_steps(name, model, optimizer):
    """Three training steps on one batch: every loss finite, the last not the first (the
    parameters moved)."""
    tokens, labels = _batch(name)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = _loss(name, model, tokens, labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[0] != losses[-1]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", FEEDBACK_METHODS)
def test_every_method_trains_and_leaves_only_embeddings_and_norms_to_backprop(name, method):
    seeded = {} if method in ("usf", "bp") else {"seed": 1}
    model = fastcredit.convert(_model(name), method, **seeded)
    report = model.conversion_report
    assert not report.unsupported, str(report)
    assert set(report.shares) <= {"method", "normalisation", "embedding"}, str(report)
    assert report.shares["method"] > 0.3
    assert abs(sum(report.shares.values()) - 1) < 1e-12
    # every weight matrix outside embeddings is in a converted module
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    embeddings |= {id(p) for m in model.modules() for n, p in m.named_parameters(recurse=False)
                   if n in LEARNT_TOKENS}
    fast = {id(p) for m in model.modules() if isinstance(m, (FeedbackLayer,
                                                             *_MULTI)) for p in m.parameters()}
    assert all(id(p) in fast or id(p) in embeddings
               for p in model.parameters() if p.dim() >= 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    if method == "kp":
        optimizer = KolenPollack(optimizer, model)
    three_steps(name, model, optimizer)


_MULTI = (fastcredit.nn.MultiheadAttention, fastcredit.nn.RNN, fastcredit.nn.LSTM,
          fastcredit.nn.GRU)


@pytest.mark.parametrize("name", MODELS)
def test_feedback_equal_to_weights_gives_backprop_gradients(name):
    plain = _model(name).double().eval()  # eval: no dropout
    fast = fastcredit.convert(plain, "fa", copy=True)
    for layer in fast.modules():
        if isinstance(layer, FeedbackLayer):
            layer.set_feedback_(layer.weight.detach())
    tokens, labels = _batch(name)
    grads = []
    for model in (plain, fast):
        model.zero_grad()
        _loss(name, model, tokens, labels).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 5
    for key in grads[0]:
        torch.testing.assert_close(grads[1][key], grads[0][key], rtol=1e-9, atol=1e-11,
                                   msg=key)


# every method on GPT-2 (Conv1D, tied head), fa on every other model: keeps the file fast
@pytest.mark.parametrize("method,name", [(m, "gpt2") for m in FEEDBACK_METHODS]
                         + [("fa", n) for n in MODELS if n != "gpt2"] + [("brsf", "lstm")])
def test_plain_state_dict_loads_strictly_and_unconvert_returns_the_plain_model(name, method):
    plain = _model(name)
    pretrained = _model(name)
    with torch.no_grad():  # a "pretrained" file: different, larger weights
        for p in pretrained.parameters():
            p.mul_(3).add_(0.1)
    converted = fastcredit.convert(plain, method)
    fresh = {k: v.clone() for k, v in converted.state_dict().items()
             if "feedback_" in k and not k.endswith("weight_norm_init")}
    converted.load_state_dict(pretrained.state_dict(), strict=True)
    state = converted.state_dict()
    for key, value in pretrained.state_dict().items():
        torch.testing.assert_close(state[key], value)
    for key, value in fresh.items():  # feedback state the file lacks keeps its fresh draw
        torch.testing.assert_close(state[key], value)
    for layer in converted.modules():  # derived state follows the loaded weights
        if isinstance(layer, FeedbackLayer):
            torch.testing.assert_close(layer.weight_norm_init,
                                       torch.linalg.vector_norm(layer.weight.detach()))
    # a converted model's own file round-trips, feedback state included
    again = fastcredit.convert(_model(name), method)
    again.load_state_dict(state, strict=True)
    assert all(torch.equal(v, state[k]) for k, v in again.state_dict().items())
    params = {id(p) for p in converted.parameters()}
    back = fastcredit.unconvert(converted)
    assert not any(isinstance(m, (FeedbackLayer, *_MULTI)) for m in back.modules())
    assert {id(p) for p in back.parameters()} == params
    original = _model(name)
    original.load_state_dict(back.state_dict(), strict=True)
    tokens, labels = _batch(name)
    original.eval(), back.eval()
    torch.testing.assert_close(_loss(name, back, tokens, labels),
                               _loss(name, original, tokens, labels))


def test_report_prints_shares_per_module():
    model = fastcredit.convert(_model("encoder"), "fa")
    report = model.conversion_report
    text = str(report)
    total = sum(p.numel() for p in model.parameters())
    embed = VOCAB * 16
    norms = 2 * 2 * 2 * 16
    assert report.shares["embedding"] == pytest.approx(embed / total)
    assert report.shares["normalisation"] == pytest.approx(norms / total)
    assert f"trained by fa: {100 * (total - embed - norms) / total:.1f} %" in text
    assert "embed  Embedding: lookup table" in text and f"[{embed:,} parameters]" in text
    counts = {c.path: c for c in report.parameters}
    assert counts["encoder.layers.0.self_attn"].count == 4 * 16 * 16 + 4 * 16
    assert counts["encoder.layers.0.self_attn"].category == "method"
    # an unsupported module is named with its parameter count and share
    odd = nn.Sequential(nn.Linear(3, 4), nn.Bilinear(4, 4, 2))
    report = fastcredit.convert(odd, "fa").conversion_report
    assert report.shares["unsupported"] == pytest.approx(34 / 50)
    assert "backprop (unsupported): 68.0 %" in str(report)


class _Tokens(nn.Module):
    """ViT's embeddings in small: a class token and positions around a patch projection."""

    def __init__(self, positions=(1, 3, 4), extra=None):
        super().__init__()
        self.proj = nn.Linear(2, 4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.pos_embed = nn.Parameter(torch.zeros(positions))
        if extra is not None:
            self.scale = nn.Parameter(torch.ones(extra))

    def forward(self, x):  # [N, 2, 2] -> [N, 3, 4]
        cls = self.cls_token.expand(len(x), -1, -1)
        return torch.cat([cls, self.proj(x)], 1) + self.pos_embed


def test_learnt_tokens_count_as_embeddings_and_other_own_parameters_stay_unsupported():
    model = fastcredit.convert(nn.Sequential(_Tokens(), nn.Flatten(), nn.Linear(12, 2)), "fa")
    report = model.conversion_report
    assert not report.unsupported
    counts = {c.path: c for c in report.parameters}
    assert (counts["0"].category, counts["0"].count) == ("embedding", 4 + 12)  # proj's apart
    assert counts["0.proj"].category == "method"
    assert report.shares["embedding"] == pytest.approx(16 / (16 + 12 + 26))
    assert "0  _Tokens: learnt tokens and position embeddings (cls_token, pos_embed)" in str(
        report)
    assert model(torch.randn(5, 2, 2)).shape == (5, 2)
    # a position table without the broadcast dim, or another Parameter beside the tokens,
    # may enter a weight product: unsupported
    for odd in (_Tokens(positions=(3, 4)), _Tokens(extra=4)):
        report = fastcredit.convert(nn.Sequential(odd), "fa").conversion_report
        assert [e.path for e in report.unsupported] == ["0"]
        assert report.shares["unsupported"] == pytest.approx(
            sum(p.numel() for n, p in odd.named_parameters() if "proj" not in n)
            / sum(p.numel() for p in odd.parameters()))
