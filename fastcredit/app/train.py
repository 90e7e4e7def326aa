"""`fastcredit train`: train a small network with one or several credit-assignment methods on a
real dataset, every method from the same initial weights, data order and seed. Each method's
per-step and per-epoch numbers go to ``OUT/<method>/`` (steps.csv, metrics.csv, metrics.json,
curves.png); one plot and one table compare them (``OUT/curves.png``, ``OUT/summary.md``)."""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import diagnostics
from .._spec import METHODS
from ..convert import convert
from . import data as datasets
from . import models, report
from .models import MODELS

OPTIMIZERS = ("sgd", "adam", "rmsprop")
STEP_ROWS = 2000  # steps.csv keeps every step up to this many, an even subsample beyond
ALIGNMENT_POINTS = 50  # alignment measurements per run when alignment_every is not given
READS_PER_EPOCH = 50  # host reads of the per-step values (the only syncs of the training loop)


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
    alignment_every: int | None = None  # steps between alignment probes; None: ~50 per run
    method_options: dict = field(default_factory=dict)


@dataclass
class RunResult:
    """What one method's training produced (also written to its output directory)."""

    config: TrainConfig
    dataset: str  # name
    dataset_source: str
    train_size: int
    test_size: int
    batches_per_epoch: int
    records: list[dict]  # one per epoch
    steps: list[dict]  # one per step: step, epoch, loss, accuracy, running_accuracy, lr, alignment
    layers: dict[str, str]  # alignment key (module path) -> its weight's shape, input to output
    seconds_per_step: float  # training only: alignment probes and test evaluation excluded


def resolve_dataset(name: str, data_dir: str | None, download: bool) -> datasets.Dataset:
    """``auto``: Fashion-MNIST when it is on this machine, otherwise sklearn's digits (its
    ``source`` then says it is the fallback)."""
    if name != "auto":
        return datasets.load(name, data_dir, download)
    try:
        return datasets.load("fashion-mnist", data_dir)
    except datasets.DatasetNotFoundError:
        digits = datasets.load("digits")
        return replace(digits, source=f"{digits.source} (fallback: Fashion-MNIST not found)")


def build_model(config: TrainConfig, input_shape: tuple[int, ...], classes: int) -> nn.Module:
    """The network for ``config.model`` (see :mod:`fastcredit.app.models`), trained by
    ``config.method``.

    The plain torch network is built first (torch's default initialisation, from torch's
    global generator) and then converted with :func:`fastcredit.convert`, so with the same
    seed every method starts from the same weights and reports the same module paths."""
    try:
        model = models.network(config.model, input_shape, classes, config.hidden)
    except ValueError as error:
        raise TrainingError(str(error)) from None
    if config.method == "bp":
        return model
    return convert(model, config.method, **config.method_options)


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


class _EpochProgress:
    """One epoch's progress on stderr: a tqdm bar on a terminal; otherwise (a log file, CI) a
    line at least every 10 % of the epoch and every 30 s, with step, loss and speed."""

    LINE_SECONDS = 30.0
    BAR_SECONDS = 1.0

    def __init__(self, total: int, label: str, enabled: bool, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.total, self.label = total, label
        self.bar = None
        self.lines = False
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            # mininterval=0: the caller already limits updates (each one follows a host read)
            self.bar = tqdm(total=total, desc=label, unit="step", file=self.stream, leave=False,
                            mininterval=0, dynamic_ncols=True)
        else:
            self.lines = enabled
        self.start = self.last = time.perf_counter()
        self.next_line = self._tenth = max(1, math.ceil(total / 10))

    def due(self) -> bool:
        """Whether enough time has passed that the caller should read values and update."""
        if self.bar is None and not self.lines:
            return False
        interval = self.BAR_SECONDS if self.bar is not None else self.LINE_SECONDS
        return time.perf_counter() - self.last >= interval

    def update(self, done: int, loss: float, accuracy: float, samples: int,
               excluded: float = 0.0) -> None:
        """``excluded``: seconds of the epoch so far that were not training (alignment
        probes), left out of the rates as the epoch's record leaves them out."""
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}", refresh=False)
            self.bar.update(done - self.bar.n)
            self.last = now
        elif self.lines and (done >= self.next_line or done == self.total
                             or now - self.last >= self.LINE_SECONDS):
            seconds = max(now - self.start - excluded, 1e-9)
            self.stream.write(
                f"{self.label}: step {done}/{self.total} ({100 * done / self.total:.0f}%)  "
                f"loss {loss:.4f}  acc {accuracy:.3f}  {done / seconds:.1f} steps/s  "
                f"{samples / seconds:.0f} samples/s\n")
            self.stream.flush()
            self.last = now
            self.next_line = (done // self._tenth + 1) * self._tenth

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _alignment_summary(model, x, y) -> dict[str, float]:
    """Per-layer update alignment (cosine with backprop's weight gradient) on a probe batch."""
    rows = diagnostics.alignment(model, x, y)
    return {name: round(row["update_cosine"], 6) for name, row in rows.items()}


def _layer_shapes(model: nn.Module, names) -> dict[str, str]:
    modules = dict(model.named_modules())
    return {name: "x".join(map(str, modules[name].weight.shape)) for name in names}


def train(config: TrainConfig, log=print, *, dataset: datasets.Dataset | None = None,
          model: nn.Module | None = None) -> list[dict]:
    """Train ``config.method`` as :func:`run_method` does; returns the per-epoch records."""
    return run_method(config, log, dataset=dataset, model=model).records


def run_method(config: TrainConfig, log=print, *, dataset: datasets.Dataset | None = None,
               model: nn.Module | None = None) -> RunResult:
    """Run the training described by ``config`` and write its outputs to ``config.out``:
    ``metrics.json``, ``metrics.csv`` (per epoch), ``steps.csv`` (per step) and
    ``curves.png``.

    ``dataset`` and ``model`` replace the ones ``config`` names (the reproductions build
    their own networks); ``model`` is trained in place. Raises TrainingError when the loss
    becomes non-finite (naming epoch and step) or the method cannot train the model."""
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
    batches_per_epoch = math.ceil(len(x_train) / config.batch_size)
    total = config.epochs * batches_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    align_every = config.alignment_every or max(1, total // ALIGNMENT_POINTS)
    log(f"fastcredit train: {config.method} {config.model} on {dataset.name} "
        f"({len(x_train)} train / {len(dataset.x_test)} test), {config.epochs} epoch(s) "
        f"= {total} steps, batch {config.batch_size}, {config.optimizer} lr {config.lr}, "
        f"seed {config.seed}, {torch.get_num_threads()} threads")
    records: list[dict] = []
    rows: list[dict] = []
    steps = 0
    train_seconds = 0.0
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(x_train), generator=generator)
        count = min(batches_per_epoch, total - steps)
        first_step = steps
        # Per-step values stay on the device; the host reads them in slices only when it
        # reports (about READS_PER_EPOCH times an epoch): no sync per step.
        step_loss = torch.zeros(count, dtype=torch.float64, device=x_train.device)
        step_correct = torch.zeros(count, dtype=torch.int64, device=x_train.device)
        sizes, lrs, probes = [], [], {}
        progress = _EpochProgress(count, f"{config.method} epoch {epoch}", config.progress)
        read = seen = correct_sum = 0
        loss_sum = 0.0
        read_every = max(1, batches_per_epoch // READS_PER_EPOCH)
        probe_seconds = 0.0
        start = time.perf_counter()
        try:
            for done in range(1, count + 1):
                index = order[(done - 1) * config.batch_size:done * config.batch_size]
                x, y = x_train[index], y_train[index]
                lrs.append(optimizer.param_groups[0]["lr"])
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step_loss[done - 1] = loss.detach()
                step_correct[done - 1] = (logits.argmax(1) == y).sum()
                sizes.append(len(index))
                steps += 1
                if steps % align_every == 0:
                    tick = time.perf_counter()
                    probes[done - 1] = _alignment_summary(model, *probe)
                    probe_seconds += time.perf_counter() - tick
                if done == count or done % read_every == 0 or progress.due():
                    losses = step_loss[read:done].tolist()
                    corrects = step_correct[read:done].tolist()
                    for i, (value, correct) in enumerate(zip(losses, corrects), read):
                        if not math.isfinite(value):
                            raise TrainingError(
                                f"non-finite loss ({value}) at epoch {epoch}, step {i + 1} "
                                f"(step {first_step + i + 1} of the run): lower --lr or change "
                                "the method's options")
                        loss_sum += value * sizes[i]
                        correct_sum += correct
                        seen += sizes[i]
                        rows.append({"step": first_step + i + 1, "epoch": epoch, "loss": value,
                                     "accuracy": correct / sizes[i],
                                     "running_accuracy": correct_sum / seen, "lr": lrs[i],
                                     "alignment": probes.get(i)})
                    read = done
                    progress.update(done, loss_sum / seen, correct_sum / seen, seen,
                                    probe_seconds)
        finally:
            progress.close()
        elapsed = time.perf_counter() - start - probe_seconds
        train_seconds += elapsed
        schedule.step()
        record = {
            "epoch": epoch,
            "steps": steps,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct_sum / seen,
            "test_accuracy": _accuracy(model, dataset.x_test, dataset.y_test),
            "samples_per_s": seen / elapsed,
            "seconds_per_step": elapsed / count,
            "alignment": _alignment_summary(model, *probe),
        }
        records.append(record)
        alignment = ", ".join(f"{k} {v:.3f}" for k, v in record["alignment"].items())
        partial = f" (partial: {count}/{batches_per_epoch} steps)" if (
            count < batches_per_epoch) else ""
        log(f"epoch {epoch}{partial}: loss {record['train_loss']:.4f}  train "
            f"{record['train_accuracy']:.4f}  test {record['test_accuracy']:.4f}  "
            f"{record['samples_per_s']:.0f} samples/s  alignment [{alignment}]")
        if steps >= total:
            break
    result = RunResult(config, dataset.name, dataset.source, len(x_train), len(dataset.x_test),
                       batches_per_epoch, records, rows,
                       _layer_shapes(model, records[-1]["alignment"]), train_seconds / steps)
    _write_outputs(out, result)
    log(f"wrote {out / 'metrics.json'}, metrics.csv, steps.csv, curves.png")
    return result


def _subsample(rows: list[dict], limit: int = STEP_ROWS) -> list[dict]:
    """Every row up to ``limit``; beyond, every k-th row, the last one and every row holding an
    alignment measurement."""
    if len(rows) <= limit:
        return rows
    stride = math.ceil(len(rows) / limit)
    return [r for i, r in enumerate(rows)
            if i % stride == 0 or i == len(rows) - 1 or r["alignment"] is not None]


def _write_outputs(out: Path, result: RunResult) -> None:
    layers = list(result.layers)
    (out / "metrics.json").write_text(json.dumps(
        {"config": asdict(result.config), "dataset": result.dataset,
         "dataset_source": result.dataset_source, "layers": result.layers,
         "seconds_per_step": result.seconds_per_step, "epochs": result.records}, indent=2))
    scalars = ["epoch", "steps", "train_loss", "train_accuracy", "test_accuracy",
               "samples_per_s", "seconds_per_step"]
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(scalars + [f"alignment_{name}" for name in layers])
        for r in result.records:
            writer.writerow([r[k] for k in scalars] + [r["alignment"][name] for name in layers])
    columns = ["step", "epoch", "loss", "accuracy", "running_accuracy", "lr"]
    with open(out / "steps.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns + [f"alignment_{name}" for name in layers])
        for row in _subsample(result.steps):
            measured = row["alignment"] or {}
            writer.writerow([row[k] for k in columns] + [measured.get(name, "") for name in layers])
    report.plot(out / "curves.png", {result.config.method: result})


def compare(config: TrainConfig, methods: list[str], log=print, command: str = "") -> dict:
    """Train each of ``methods`` with ``config`` (same data, data order, seed and initial
    weights), each into ``config.out/<method>/``; then write ``config.out/curves.png`` (every
    method on the same axes) and ``config.out/summary.md``. Returns {method: RunResult}."""
    if len(set(methods)) != len(methods) or not methods:
        raise ValueError(f"methods must be distinct and at least one, got {methods}")
    if config.threads:
        torch.set_num_threads(config.threads)
    dataset = resolve_dataset(config.dataset, config.data_dir, config.download)
    log(f"data: {dataset.name} from {dataset.source}")
    out = Path(config.out)
    results = {}
    for i, method in enumerate(methods, 1):
        if len(methods) > 1:
            log(f"== {method} ({i}/{len(methods)})")
        results[method] = run_method(replace(config, method=method, out=str(out / method)), log,
                                     dataset=dataset)
    report.plot(out / "curves.png", results)
    (out / "summary.md").write_text(report.summary(results, command))
    log(f"wrote {out / 'curves.png'} and {out / 'summary.md'}")
    return results


__all__ = ["METHODS", "MODELS", "OPTIMIZERS", "RunResult", "TrainConfig", "TrainingError",
           "build_model", "compare", "resolve_dataset", "run_method", "train"]
