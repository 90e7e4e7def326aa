"""Character-level language modelling for ``fastcredit reproduce transformer-lm``: a small
decoder-only transformer built from torch modules, and its training loop (next-character
cross-entropy over every token; cross-entropy, perplexity and accuracy on the test split).

An epoch is one pass over the training characters: the stream, from a random offset below the
context length, is cut into windows of ``context + 1`` ids overlapping by one (the inputs and
their next characters), shuffled and batched, so each character after the offset is a target
exactly once."""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import data as datasets
from .train import TrainConfig, TrainingError, _EpochProgress, _optimizer


class CharTransformer(nn.Module):
    """Token and learned position embeddings, ``layers`` pre-norm causal self-attention + GELU
    MLP blocks (``nn.TransformerEncoderLayer``, width ``width``, MLP ``4 * width``, no
    dropout) under a causal mask, a final LayerNorm and a Linear head to the vocabulary.
    tokens [N, T] int64 with T <= ``context`` -> logits [N, T, vocab]; ValueError for a
    longer T."""

    def __init__(self, vocab: int, context: int = 64, width: int = 64, layers: int = 2,
                 heads: int = 4):
        super().__init__()
        self.context = context
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Embedding(context, width)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context),
                             persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.context:
            raise ValueError(f"{length} tokens exceed the model's context of {self.context}")
        x = self.embed(tokens) + self.position.weight[:length]
        x = self.blocks(x, mask=self.mask[:length, :length], is_causal=True)
        return self.head(self.norm(x))


def windows(stream: torch.Tensor, context: int, offset: int = 0) -> torch.Tensor:
    """[M, context + 1] windows of ``stream`` [L] from ``offset`` on, each starting where the
    previous one's inputs end (so each id after ``offset`` is a target once); the last
    ``< context`` ids are left out (see :func:`evaluate` for them). A view, no copy."""
    count = max(0, (len(stream) - offset - 1) // context)
    if count == 0:
        return stream.new_empty((0, context + 1))
    return stream[offset:offset + count * context + 1].unfold(0, context + 1, context)


def evaluate(model: nn.Module, stream: torch.Tensor, context: int, batch: int = 256) -> dict:
    """Next-character cross-entropy (nats per character, the mean over every character of
    ``stream`` [L] but the first, each predicted once from the up-to-``context`` characters
    before it within its window) and accuracy (argmax = next character). Returns
    ``{"nats": float, "accuracy": float, "characters": L - 1}``."""
    if len(stream) < 2:
        raise ValueError(f"a stream of {len(stream)} ids has no next character to predict")
    full = windows(stream, context)
    chunks = list(full.split(batch)) if len(full) else []
    covered = len(full) * context  # ids up to this index have been targets
    if covered < len(stream) - 1:  # the tail shorter than a window
        chunks.append(stream[covered:].unsqueeze(0))
    nats, correct = torch.zeros((), dtype=torch.float64), 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for chunk in chunks:
            logits = model(chunk[:, :-1]).flatten(0, 1)
            targets = chunk[:, 1:].flatten()
            nats += F.cross_entropy(logits, targets, reduction="sum").double()
            correct += int((logits.argmax(1) == targets).sum())
    model.train(was_training)
    characters = len(stream) - 1
    return {"nats": nats.item() / characters, "accuracy": correct / characters,
            "characters": characters}


def bigram_nats(train: torch.Tensor, test: torch.Tensor, vocab: int) -> float:
    """The reference a model must beat to use more than the previous character: next-character
    cross-entropy (nats per character) on ``test`` [L] of the add-one-smoothed bigram
    counts of ``train``, P(b | a) = (count(a, b) + 1) / (count(a) + vocab), over the same
    L - 1 targets as :func:`evaluate`."""
    counts = torch.ones(vocab, vocab, dtype=torch.float64)
    counts.view(-1).index_add_(0, train[:-1] * vocab + train[1:],
                               torch.ones(len(train) - 1, dtype=torch.float64))
    logp = (counts / counts.sum(1, keepdim=True)).log()
    return -logp[test[:-1], test[1:]].mean().item()


def perplexity(nats: float) -> float:
    """Perplexity per character: exp(cross-entropy in nats per character)."""
    return math.exp(nats)


def bits_per_character(nats: float) -> float:
    return nats / math.log(2)


def train(config: TrainConfig, model: nn.Module, corpus: datasets.TextDataset, context: int,
          log=print) -> list[dict]:
    """Train ``model`` (in place) on ``corpus.train`` for ``config.epochs`` epochs (module
    docstring) of ``config.batch_size`` windows, stopping early after ``config.max_steps``;
    optimizer, learning rate, weight decay and milestones (per epoch) from ``config`` as for
    ``fastcredit train``. After each epoch the test split is evaluated. Writes
    ``config.out/metrics.json`` and ``metrics.csv``; returns the per-epoch records
    (epoch, steps, train_nats, train_accuracy, test_nats, test_accuracy, seconds). Raises
    TrainingError when the loss becomes non-finite."""
    if config.threads:
        torch.set_num_threads(config.threads)
    optimizer, schedule = _optimizer(config, model)
    generator = torch.Generator().manual_seed(config.seed)
    per_epoch = math.ceil(len(windows(corpus.train, context)) / config.batch_size)
    log(f"fastcredit reproduce: {config.method} on {corpus.name} ({len(corpus.train)} train / "
        f"{len(corpus.test)} test characters), {config.epochs} epoch(s) of about {per_epoch} "
        f"steps, batch {config.batch_size} x {context} characters, "
        f"{config.optimizer} lr {config.lr}, seed {config.seed}, "
        f"{torch.get_num_threads()} threads")
    records, steps = [], 0
    for epoch in range(1, config.epochs + 1):
        offset = int(torch.randint(context, (), generator=generator))
        batches = windows(corpus.train, context, offset)
        order = torch.randperm(len(batches), generator=generator).split(config.batch_size)
        count = len(order)
        if config.max_steps is not None:
            count = min(count, config.max_steps - steps)
        progress = _EpochProgress(count, f"{config.method} epoch {epoch}", config.progress)
        losses = torch.zeros(count, dtype=torch.float64)
        correct = seen = 0
        start = time.perf_counter()
        try:
            for done, index in enumerate(order[:count], 1):
                batch = batches[index]
                logits = model(batch[:, :-1]).flatten(0, 1)
                targets = batch[:, 1:].flatten()
                loss = F.cross_entropy(logits, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses[done - 1] = loss.detach()
                correct += int((logits.detach().argmax(1) == targets).sum())
                seen += len(targets)
                steps += 1
                if done == count or progress.due():
                    mean = losses[:done].mean().item()
                    if not math.isfinite(mean):
                        bad = int(torch.nonzero(~losses[:done].isfinite())[0])
                        raise TrainingError(
                            f"non-finite loss ({losses[bad].item()}) at epoch {epoch}, step "
                            f"{bad + 1} (step {steps - done + bad + 1} of the run): lower the "
                            "learning rate or change the method's options")
                    progress.update(done, mean, correct / seen, seen)
        finally:
            progress.close()
        seconds = time.perf_counter() - start
        schedule.step()
        test = evaluate(model, corpus.test, context)
        records.append({"epoch": epoch, "steps": steps,
                        "train_nats": losses.mean().item(), "train_accuracy": correct / seen,
                        "test_nats": test["nats"], "test_accuracy": test["accuracy"],
                        "seconds": round(seconds, 1)})
        partial = f" (partial: {count}/{len(order)} steps)" if count < len(order) else ""
        log(f"epoch {epoch}{partial}: train {records[-1]['train_nats']:.4f} nats/char, test "
            f"{test['nats']:.4f} nats/char (perplexity {perplexity(test['nats']):.3f}, "
            f"accuracy {test['accuracy']:.4f}), {seen / seconds:.0f} characters/s")
        if config.max_steps is not None and steps >= config.max_steps:
            break
    _write_outputs(Path(config.out), config, corpus, records)
    return records


def _write_outputs(out: Path, config: TrainConfig, corpus: datasets.TextDataset,
                   records: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(
        {"config": asdict(config), "dataset": corpus.name, "dataset_source": corpus.source,
         "train_characters": len(corpus.train), "test_characters": len(corpus.test),
         "epochs": records}, indent=2))
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
