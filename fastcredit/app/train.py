"""`fastcredit train`: train a small network with a chosen credit-assignment method on a real
dataset, report per-epoch numbers, and write metrics.csv, metrics.json and curves.png."""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import diagnostics
from .._spec import FEEDBACK_METHODS as _FEEDBACK_METHODS
from .._spec import METHODS
from ..convert import convert
from . import data as datasets

FEEDBACK_METHODS = tuple(m for m in _FEEDBACK_METHODS if m != "bp")  # bp: plain torch layers
MODELS = ("mlp", "lenet", "convnet")
OPTIMIZERS = ("sgd", "adam", "rmsprop")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, an impossible model/method pair)."""


@dataclass
class TrainConfig:
    method: str = "bp"
    model: str = "mlp"
    dataset: str = "auto"
    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_milestones: tuple[int, ...] = ()  # epochs after which the learning rate is divided by 10
    seed: int = 0
    threads: int | None = None
    hidden: int = 256
    max_steps: int | None = None
    data_dir: str | None = None
    download: bool = False
    out: str = "fastcredit-run"
    progress: bool = True
    method_options: dict = field(default_factory=dict)


def resolve_dataset(name: str, data_dir: str | None, download: bool) -> datasets.Dataset:
    """``auto``: Fashion-MNIST when it is on this machine, otherwise sklearn's digits."""
    if name != "auto":
        return datasets.load(name, data_dir, download)
    try:
        return datasets.load("fashion-mnist", data_dir)
    except datasets.DatasetNotFoundError:
        return datasets.load("digits")


def build_model(config: TrainConfig, input_shape: tuple[int, ...], classes: int) -> nn.Module:
    """The network for ``config.model``, trained by ``config.method``."""
    features = math.prod(input_shape)
    if config.method == "lra":
        if config.model != "mlp":
            raise TrainingError("method 'lra' supports --model mlp only (LRA conv blocks are "
                                "not implemented)")
        from ..nn import LRA

        return LRA([features, config.hidden, config.hidden, classes],
                   **{"activation": "tanh", **config.method_options})
    if config.method in FEEDBACK_METHODS:
        from functools import partial

        from .. import nn as fcnn

        Linear = partial(fcnn.Linear, method=config.method, **config.method_options)
        Conv2d = partial(fcnn.Conv2d, method=config.method, **config.method_options)
    else:
        Linear, Conv2d = nn.Linear, nn.Conv2d
    if config.model == "mlp":
        model = nn.Sequential(nn.Flatten(), Linear(features, config.hidden), nn.Tanh(),
                              Linear(config.hidden, config.hidden), nn.Tanh(),
                              Linear(config.hidden, classes))
    elif config.model == "lenet":
        if input_shape[-1] < 16:
            raise TrainingError(f"--model lenet needs images of at least 16x16, the dataset's "
                                f"are {input_shape}; use --model mlp or convnet")
        side = ((input_shape[-1] + 4 - 4) // 2 - 4) // 2  # conv5 pad 2, pool, conv5, pool
        model = nn.Sequential(
            nn.Unflatten(1, (1, input_shape[0])) if len(input_shape) == 2 else nn.Identity(),
            Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.MaxPool2d(2),
            Conv2d(6, 16, 5), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
            Linear(16 * side * side, 120), nn.Tanh(), Linear(120, 84), nn.Tanh(),
            Linear(84, classes))
    else:  # convnet: two 3x3 conv blocks and global pooling, for any image size
        model = nn.Sequential(
            nn.Unflatten(1, (1, input_shape[0])) if len(input_shape) == 2 else nn.Identity(),
            Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            Linear(256, classes))
    if config.method == "dfa":
        return convert(model, "dfa", **config.method_options)
    return model


def _optimizer(config: TrainConfig, model: nn.Module):
    """The optimizer and its per-epoch learning-rate schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = config.weight_decay
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=decay)
    elif config.optimizer == "rmsprop":
        optimizer = torch.optim.RMSprop(params, lr=config.lr, weight_decay=decay)
    else:
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=decay)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.lr_milestones), 0.1)
    if any(getattr(m, "method", None) == "kp" for m in model.modules()):
        from ..optim import KolenPollack  # B receives W's update and its own weight decay

        optimizer = KolenPollack(optimizer, model)
    return optimizer, schedule


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch):
            correct += (model(x[start:start + batch]).argmax(1) == y[start:start + batch]).sum()
    model.train()
    return correct.item() / max(1, len(x))


class _Progress:
    """One status line on stderr, redrawn in place when stderr is a terminal."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label = total, label
        self.enabled = enabled and sys.stderr.isatty()
        self.last = 0.0

    def update(self, done: int, loss: float) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.1 and done < self.total):
            return
        self.last = now
        filled = int(30 * done / max(1, self.total))
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
                         f"{done}/{self.total} loss {loss:.4f}")
        if done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _alignment_summary(model, x, y) -> dict[str, float]:
    """Per-layer update alignment (cosine with backprop's weight gradient) on a probe batch."""
    report = diagnostics.alignment(model, x, y)
    return {name: round(row["update_cosine"], 6) for name, row in report.items()}


def train(config: TrainConfig, log=print, *, dataset: datasets.Dataset | None = None,
          model: nn.Module | None = None) -> list[dict]:
    """Run the training described by ``config``; returns the per-epoch records it wrote.

    ``dataset`` and ``model`` replace the ones ``config`` names (the reproductions build
    their own networks); ``model`` is trained in place."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    if dataset is None:
        dataset = resolve_dataset(config.dataset, config.data_dir, config.download)
    if model is None:
        model = build_model(config, dataset.input_shape, dataset.num_classes)
    optimizer, schedule = _optimizer(config, model)
    x_train, y_train = dataset.x_train, dataset.y_train
    probe = (dataset.x_test[:128], dataset.y_test[:128])
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"fastcredit train: {config.method} {config.model} on {dataset.name} "
        f"({len(x_train)} train / {len(dataset.x_test)} test), {config.epochs} epoch(s), "
        f"batch {config.batch_size}, {config.optimizer} lr {config.lr}, "
        f"{torch.get_num_threads()} threads")
    records = []
    steps = 0
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(x_train), generator=generator)
        batches = range(0, len(x_train), config.batch_size)
        progress = _Progress(len(batches), f"epoch {epoch}", config.progress)
        # Sums stay on the device; the host reads them only to report (no sync per step).
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        seen = read_at = 0
        read_every = max(1, len(batches) // 50)
        start = time.perf_counter()
        for done, offset in enumerate(batches, 1):
            index = order[offset:offset + config.batch_size]
            x, y = x_train[index], y_train[index]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            steps += 1
            last = done == len(batches) or (
                config.max_steps is not None and steps >= config.max_steps)
            if last or done % read_every == 0:
                mean_loss = loss_sum.item() / seen
                if not math.isfinite(mean_loss):
                    where = f"{done}" if done == read_at + 1 else f"{read_at + 1}-{done}"
                    raise TrainingError(
                        f"non-finite loss ({mean_loss}) at epoch {epoch}, step {where}: lower "
                        "--lr or change the method's options")
                read_at = done
                progress.update(done, mean_loss)
            if last:
                break
        elapsed = time.perf_counter() - start
        schedule.step()
        record = {
            "epoch": epoch,
            "steps": steps,
            "train_loss": loss_sum.item() / seen,
            "train_accuracy": correct.item() / seen,
            "test_accuracy": _accuracy(model, dataset.x_test, dataset.y_test),
            "samples_per_s": seen / elapsed,
            "alignment": _alignment_summary(model, *probe),
        }
        records.append(record)
        alignment = ", ".join(f"{k} {v:.3f}" for k, v in record["alignment"].items())
        log(f"epoch {epoch}: loss {record['train_loss']:.4f}  train {record['train_accuracy']:.4f}"
            f"  test {record['test_accuracy']:.4f}  {record['samples_per_s']:.0f} samples/s  "
            f"alignment [{alignment}]")
        if config.max_steps is not None and steps >= config.max_steps:
            break
    _write_outputs(out, config, records)
    log(f"wrote {out / 'metrics.csv'}, {out / 'metrics.json'}, {out / 'curves.png'}")
    return records


def _write_outputs(out: Path, config: TrainConfig, records: list[dict]) -> None:
    (out / "metrics.json").write_text(json.dumps(
        {"config": asdict(config), "epochs": records}, indent=2))
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        layers = list(records[0]["alignment"]) if records else []
        writer.writerow(["epoch", "train_loss", "train_accuracy", "test_accuracy",
                         "samples_per_s"] + [f"alignment_{name}" for name in layers])
        for r in records:
            writer.writerow([r["epoch"], r["train_loss"], r["train_accuracy"],
                             r["test_accuracy"], r["samples_per_s"]]
                            + [r["alignment"][name] for name in layers])
    _plot(out / "curves.png", config, records)


def _plot(path: Path, config: TrainConfig, records: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [r["train_loss"] for r in records], marker="o")
    axes[0].set(title="training loss", xlabel="epoch")
    axes[1].plot(epochs, [r["train_accuracy"] for r in records], marker="o", label="train")
    axes[1].plot(epochs, [r["test_accuracy"] for r in records], marker="o", label="test")
    axes[1].set(title="accuracy", xlabel="epoch", ylim=(0, 1))
    axes[1].legend()
    for layer in (records[0]["alignment"] if records else {}):
        axes[2].plot(epochs, [r["alignment"][layer] for r in records], marker="o",
                     label=f"layer {layer}")
    axes[2].set(title="update alignment with backprop (cosine)", xlabel="epoch", ylim=(-1, 1.05))
    axes[2].legend(fontsize="small")
    figure.suptitle(f"fastcredit: {config.method} / {config.model}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
