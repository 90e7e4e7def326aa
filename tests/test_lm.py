"""`fastcredit reproduce transformer-lm`: the fortunes corpus loader (split, checksums, missing
package), the character transformer's converted forms, the perplexity arithmetic, and short
runs of every method on a generated corpus."""

import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import fastcredit
from fastcredit.app import cli, data, lm, reproduce
from datasets import installed_or_skip

FORTUNES = data.TEXT_REGISTRY["fortunes"]
TINY = dict(vocab=data.OTHER + 1, context=8, width=16, layers=2, heads=2)


def _entries(seed, count):
    """Fortune-like entries: words, tabs, an attribution line, an odd byte now and then."""
    g = torch.Generator().manual_seed(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "%DCL", "caf\xc3\xa9", "so", "it", "goes"]
    out = []
    for i in range(count):
        n = int(torch.randint(3, 12, (), generator=g))
        picks = torch.randint(len(words), (n,), generator=g).tolist()
        text = " ".join(words[p] for p in picks) + f" {i}.\n\t\t-- Someone\n"
        out.append(text.encode("latin-1"))
    return out


@pytest.fixture
def corpus_dir(tmp_path, monkeypatch):
    """Two fortune files (the second without a final separator) registered as 'fortunes'."""
    monkeypatch.delenv("FASTCREDIT_DATA", raising=False)
    folder = tmp_path / "fortunes"
    folder.mkdir()
    alpha, beta = _entries(0, 120), _entries(1, 80)
    (folder / "alpha").write_bytes(b"%\n".join(alpha) + b"%\n")
    (folder / "beta").write_bytes(b"%\n".join(beta))
    files = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
             for name in ("alpha", "beta")}
    monkeypatch.setitem(data.TEXT_REGISTRY, "fortunes",
                        replace(FORTUNES, system_dir=tmp_path / "none", files=files))
    return folder, alpha + beta


def test_fortune_entries_split_on_separator_lines_only():
    text = b"%\nfirst\nline\n%\n%\n%DCL-MEM-BAD, 100%\n\n%\n  \n%\nlast"
    assert data.fortune_entries(text) == [b"first\nline\n", b"%DCL-MEM-BAD, 100%\n\n",
                                          b"last\n"]


def test_the_split_is_by_entry_hash_and_deterministic(corpus_dir):
    folder, entries = corpus_dir
    corpus = data.load_text("fortunes", folder.parent)
    again = data.load_text("fortunes", folder)  # the files themselves, or <dir>/fortunes
    assert torch.equal(corpus.train, again.train) and torch.equal(corpus.test, again.test)
    # An entry is test data iff the first 8 bytes of its SHA-256 are 0 mod 10.
    test = [e for e in entries if int(hashlib.sha256(e).hexdigest()[:16], 16) % 10 == 0]
    train = [e for e in entries if e not in test]
    assert 0 < len(test) < len(entries) / 5
    assert torch.equal(corpus.train, data.encode(b"".join(e + b"%\n" for e in train)))
    assert torch.equal(corpus.test, data.encode(b"".join(e + b"%\n" for e in test)))
    assert corpus.vocab_size == 98 and corpus.source == str(folder)


def test_encoding_keeps_tab_newline_and_printable_ascii_and_maps_the_rest_to_other():
    ids = data.encode("\t\n A~\x07\x08\xe9".encode("latin-1"))
    assert ids.tolist() == [0, 1, 2, 35, 96, 97, 97, 97]
    assert data.decode(ids) == "\t\n A~\ufffd\ufffd\ufffd"


def test_a_changed_file_is_a_checksum_error_naming_it(corpus_dir):
    folder, _ = corpus_dir
    (folder / "beta").write_bytes((folder / "beta").read_bytes() + b"%\nextra\n")
    with pytest.raises(data.ChecksumError, match=r"beta: SHA-256 \w+ is not the registered one "
                                                 r"of 'fortunes' \(fortunes 1:1.99.1-7.3\)"):
        data.load_text("fortunes", folder)
    assert issubclass(data.ChecksumError, data.DataError)


def test_a_missing_corpus_names_the_package_to_install(corpus_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load_text("fortunes", tmp_path / "empty")
    message = str(error.value)
    assert message.startswith("text corpus 'fortunes': alpha not found in ")
    assert "sudo apt-get install fortunes (version 1:1.99.1-7.3)" in message


def _require_fortunes():
    return installed_or_skip(lambda: data.load_text("fortunes"), "FASTCREDIT_REQUIRE_FORTUNES",
                             "fortunes")


def test_required_fortunes_fails_instead_of_skipping(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTCREDIT_DATA", raising=False)
    monkeypatch.setitem(data.TEXT_REGISTRY, "fortunes",
                        replace(FORTUNES, system_dir=tmp_path / "none"))
    monkeypatch.setenv("FASTCREDIT_REQUIRE_FORTUNES", "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get install fortunes"):
        _require_fortunes()


def test_debian_fortunes_is_the_registered_corpus(monkeypatch):
    monkeypatch.delenv("FASTCREDIT_DATA", raising=False)
    corpus = _require_fortunes()
    assert len(FORTUNES.files) == 43
    # 15217 entries, as many as the packages' strfile indexes (.dat) count; 1472 to test
    entries = [data.fortune_entries((FORTUNES.system_dir / f).read_bytes()) for f in FORTUNES.files]
    assert sum(map(len, entries)) == 15217
    assert sum(data.in_test_split(e) for file in entries for e in file) == 1472
    assert (len(corpus.train), len(corpus.test)) == (2328369, 248307)
    assert data.decode(corpus.test[:22]) == "A copy of the universe"
    counts = torch.bincount(corpus.train, minlength=corpus.vocab_size)
    assert counts.gt(0).all() and counts[data.OTHER] < 400  # every symbol occurs, "other" rarely


class _Logits(torch.nn.Module):
    """logits[n, t] = table[tokens[n, t]]: a bigram model with known probabilities."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, tokens):
        return self.table[tokens]


def test_uniform_logits_give_perplexity_equal_to_the_vocabulary_size():
    stream = torch.randint(1, 98, (300,), generator=torch.Generator().manual_seed(0))
    result = lm.evaluate(_Logits(torch.zeros(98, 98, dtype=torch.float64)), stream, 16)
    assert result["characters"] == 299
    assert result["nats"] == pytest.approx(math.log(98), rel=1e-12)
    assert lm.perplexity(result["nats"]) == pytest.approx(98, rel=1e-12)
    assert lm.bits_per_character(result["nats"]) == pytest.approx(math.log2(98), rel=1e-12)
    assert result["accuracy"] == 0  # ties pick id 0, which the stream never holds


@pytest.mark.parametrize("length", [23, 21, 5, 2])  # a tail window, none, only a tail
def test_evaluation_scores_every_next_character_once(length):
    g = torch.Generator().manual_seed(length)
    probs = torch.softmax(torch.randn(6, 6, generator=g, dtype=torch.float64), 1)
    stream = torch.randint(6, (length,), generator=g)
    result = lm.evaluate(_Logits(probs.log()), stream, context=5, batch=2)
    pairs = list(zip(stream[:-1].tolist(), stream[1:].tolist()))
    nats = -sum(math.log(probs[a, b]) for a, b in pairs) / len(pairs)
    accuracy = sum(int(probs[a].argmax()) == b for a, b in pairs) / len(pairs)
    assert result["nats"] == pytest.approx(nats, rel=1e-12)
    assert result["accuracy"] == accuracy and result["characters"] == length - 1


def test_the_bigram_reference_is_add_one_smoothed_counts():
    train, test = torch.tensor([0, 1, 0, 1, 2]), torch.tensor([0, 1, 2, 2])
    # P(1|0) = (2+1)/(2+3), P(2|1) = (1+1)/(2+3), P(2|2) = (0+1)/(0+3)
    want = -(math.log(3 / 5) + math.log(2 / 5) + math.log(1 / 3)) / 3
    assert lm.bigram_nats(train, test, 3) == pytest.approx(want, rel=1e-12)


def test_training_windows_cover_each_character_after_the_offset_once():
    stream = torch.arange(30)
    w = lm.windows(stream, 8, offset=3)
    assert w.shape == (3, 9) and w[:, 0].tolist() == [3, 11, 19]
    assert torch.equal(w[:, 1:].flatten(), torch.arange(4, 28))


def _converted(method, **options):
    torch.manual_seed(0)
    model = lm.CharTransformer(**TINY)
    return model if method == "bp" else fastcredit.convert(model, method, **options)


@pytest.mark.parametrize("method", ["fa", "usf", "frsf", "brsf", "kp"])
def test_the_fa_family_leaves_only_embeddings_and_norms_to_backprop(method):
    model = _converted(method)
    shares = model.conversion_report.shares
    assert set(shares) == {"method", "normalisation", "embedding"} and shares["method"] > 0.8
    for name, module in model.named_modules():
        for key, p in module.named_parameters(recurse=False):
            if p.dim() >= 2 and not isinstance(module, torch.nn.Embedding):
                assert type(module).__module__.startswith("fastcredit.nn"), (name, key)


@pytest.mark.parametrize("error_at", ["output", "head_input"])
def test_dfa_puts_one_point_per_block_and_sends_each_token_its_projected_error(error_at):
    """grad of block 0's weights = autograd through block 0 alone of e B_0, e the per-token
    error (rows (0, 1)): by default the logits' [N, T, V], with error_at="head_input" the
    gradient at the head's input [N, T, D] (Launay et al. 2020's placement); float64."""
    model = _converted("dfa", seed=2, error_at=error_at).double()
    report = model.conversion_report
    assert list(report.blocks) == ["blocks.layers.0", "norm", "output"]  # the last point
    assert report.blocks["output"] == ["head"]  # follows the final norm, before the head
    (head,) = [e for e in report.converted if e.path == "head"]
    assert ("on its input" in head.note) == (error_at == "head_input")
    layer = model.blocks.layers[0]
    inputs, seen = {}, {}
    layer.register_forward_pre_hook(lambda m, args, kwargs: inputs.update(x=args[0], **kwargs),
                                    with_kwargs=True)
    model.head.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    tokens = torch.randint(TINY["vocab"], (3, 8), generator=torch.Generator().manual_seed(1))
    logits = model(tokens)
    logits.retain_grad()
    if error_at == "head_input":
        seen["x"].retain_grad()
    F.cross_entropy(logits.flatten(0, 1), tokens.roll(-1, 1).flatten()).backward()
    e = logits.grad if error_at == "output" else seen["x"].grad
    if error_at == "head_input":  # the true gradient at the head's input
        torch.testing.assert_close(e, logits.grad @ model.head.weight, rtol=1e-12, atol=1e-14)
    assert model.head.dfa_output.batch_dims == (0, 1)
    assert model.head.dfa_output.num_outputs == e.shape[-1]
    point = layer.dfa_point
    assert point.batch_dims == (0, 1) and point.features == TINY["width"]
    b = point.feedback_matrix(dtype=torch.float64)  # [C, D]
    signal = (e.flatten(0, 1) @ b).view(3, 8, TINY["width"])
    params = [layer.linear1.weight, layer.self_attn.in_proj_weight, layer.norm1.weight]
    with fastcredit.nn.mode.backprop():
        h = layer(inputs.pop("x").detach(), **inputs)
    for p, want in zip(params, torch.autograd.grad(h, params, signal)):
        torch.testing.assert_close(p.grad, want, rtol=1e-10, atol=1e-12)


def test_dfa_sublayers_feed_attention_and_the_mlp_each_their_own_projection():
    """sublayers=True (TinyDFA's finer placement): the attention's weights get autograd of
    e B_attention through the attention alone, the MLP's of e B_block through the MLP half
    (the attention's output detached); e the logits' per-token error; float64."""
    model = _converted("dfa", seed=4, sublayers=True).double()
    layer = model.blocks.layers[0]
    assert layer.self_attn.dfa_point is not layer.dfa_point  # two points, two matrices
    seen = {}
    layer.self_attn.register_forward_pre_hook(
        lambda m, args, kwargs: seen.update(attention=(args, kwargs)), with_kwargs=True)
    layer.norm2.register_forward_pre_hook(lambda m, args: seen.update(mlp=args[0]))
    tokens = torch.randint(TINY["vocab"], (3, 8), generator=torch.Generator().manual_seed(2))
    logits = model(tokens)
    logits.retain_grad()
    F.cross_entropy(logits.flatten(0, 1), tokens.roll(-1, 1).flatten()).backward()
    e = logits.grad.flatten(0, 1)
    width = TINY["width"]
    args, kwargs = torch.utils._pytree.tree_map_only(torch.Tensor, torch.Tensor.detach,
                                                     seen["attention"])
    x2 = seen["mlp"].detach()
    with fastcredit.nn.mode.backprop():
        attention = layer.self_attn(*args, **kwargs)[0]
        mlp = layer.linear2(layer.activation(layer.linear1(layer.norm2(x2))))
    for out, point, params in (
            (attention, layer.self_attn.dfa_point,
             [layer.self_attn.in_proj_weight, layer.self_attn.out_proj.weight]),
            (mlp, layer.dfa_point, [layer.linear1.weight, layer.linear2.weight,
                                    layer.norm2.weight])):
        signal = (e @ point.feedback_matrix(dtype=torch.float64)).view(3, 8, width)
        for p, want in zip(params, torch.autograd.grad(out, params, signal)):
            torch.testing.assert_close(p.grad, want, rtol=1e-10, atol=1e-12)


def test_every_run_trains_three_steps_with_finite_loss(corpus_dir, tmp_path):
    folder, _ = corpus_dir
    corpus = data.load_text("fortunes", folder)
    for spec in reproduce.REPRODUCTIONS["transformer-lm"].runs(False):
        config = replace(spec.config, max_steps=3, out=str(tmp_path / spec.id), progress=False,
                         hidden=16)
        model = reproduce.build_model(replace(spec, config=config), corpus)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        (record,) = lm.train(config, model, corpus, reproduce.LM_CONTEXT, log=lambda *_: None)
        assert record["steps"] == 3 and math.isfinite(record["train_nats"])
        assert math.isfinite(record["test_nats"]) and record["test_nats"] < math.log(98) + 1
        moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert "head.weight" in moved
        assert ("blocks.layers.0.linear1.weight" in moved) == (spec.id != "readout"), spec.id
        saved = json.loads((tmp_path / spec.id / "metrics.json").read_text())
        assert saved["epochs"] == [record]


def test_epochs_are_passes_over_the_training_characters(corpus_dir, tmp_path):
    folder, _ = corpus_dir
    corpus = data.load_text("fortunes", folder)
    results = reproduce.run("transformer-lm", out=tmp_path, only="dfa-head-input", epochs=2,
                            threads=1, data_dir=str(folder), log=lambda *_: None)
    (row,) = results["runs"]
    epochs = json.loads((tmp_path / "dfa-head-input" / "metrics.json").read_text())["epochs"]
    steps = [epochs[0]["steps"], epochs[1]["steps"] - epochs[0]["steps"]]
    # each epoch: the windows from an offset below the context, in batches of 32
    windows = (len(corpus.train) - 1) // reproduce.LM_CONTEXT
    assert set(steps) <= {math.ceil((windows - 1) / 32), math.ceil(windows / 32)}
    assert row["epochs"] == 2 and row["steps"] == sum(steps)
    table = (tmp_path / "results.md").read_text()
    assert "| dfa-head-input | dfa | fortunes | 2 (" in table and "test perplexity/char" in table
    assert f"{lm.perplexity(row['test_nats']):.3f}" in table


def test_reproduce_refuses_an_image_dataset_for_the_language_model(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["reproduce", "transformer-lm", "--dataset", "digits"])
    assert stop.value.code == 2
    assert ("argument --dataset: transformer-lm trains on one of fortunes, not digits"
            in capsys.readouterr().err)
    with pytest.raises(ValueError, match="trains on one of"):
        reproduce.run("transformer-lm", dataset="mnist")


def test_the_registry_lists_every_plain_text_file_of_debian_fortunes(monkeypatch):
    monkeypatch.delenv("FASTCREDIT_DATA", raising=False)
    _require_fortunes()
    listed = {p.name for p in Path(FORTUNES.system_dir).iterdir()
              if p.suffix not in (".dat", ".u8") and not p.is_symlink()}
    assert listed == set(FORTUNES.files)
