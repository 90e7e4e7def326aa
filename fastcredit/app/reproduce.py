"""`fastcredit reproduce NAME`: published experiments re-run with fastcredit.

Each reproduction has a short schedule (minutes on 2 CPU cores, one thread) and the published
one (``full=True``). Each trains one :class:`Task`: image classification runs train through
:func:`fastcredit.app.train.train` (so each writes its own metrics.csv, metrics.json and
curves.png under ``out/<run id>``), then measure alignment with backprop on 128 test images;
language-model runs train through :func:`fastcredit.app.lm.train` (metrics.csv and
metrics.json). ``out/results.json`` and ``out/results.md`` hold one row per run beside the
published anchor. docs/RESULTS.md records the numbers we got.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from .. import diagnostics
from ..convert import convert
from ..nn import LRA, Bottleneck, backprop
from . import data as datasets
from . import lm, models, train
from .train import TrainConfig

Data = datasets.Dataset | datasets.TextDataset
Builder = Callable[[TrainConfig, Data], nn.Module]


@dataclass(frozen=True)
class Run:
    """One training run of a reproduction and what to compare it with."""

    id: str  # output sub-directory and row key
    config: TrainConfig
    build: Builder | None = None  # default: the CLI's train.build_model
    zero_init: bool = False  # every weight and bias starts at 0 (feedback matrices do not)
    backprop: bool = False  # train the same network with plain backprop (the control)
    probe: tuple[str, ...] | None = None  # modules whose output signal alignment is reported
    info: dict = field(default_factory=dict)  # extra columns: published anchors, widths


Columns = tuple[tuple[str, Callable[[dict], str]], ...]  # table header, cell from a row


@dataclass(frozen=True)
class Task:
    """What a reproduction's runs learn: how its data is loaded (name, data_dir, download),
    how one run trains (config, model, data, run, log -> the row's measured fields), the
    table columns every row has, and the datasets ``--dataset`` may name."""

    load: Callable[[str, str | None, bool], Data]
    fit: Callable[[TrainConfig, nn.Module, Data, Run, Callable], dict]
    columns: Columns
    datasets: tuple[str, ...]


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _fit_classifier(config: TrainConfig, model: nn.Module, data: datasets.Dataset, spec: Run,
                    log) -> dict:
    records = train.train(config, log, dataset=data, model=model)
    probe = None
    if spec.probe is not None:
        probe = diagnostics.alignment(model, data.x_test[:128], data.y_test[:128],
                                      modules=spec.probe)
    last = records[-1]
    return {"epochs": last["epoch"], "steps": last["steps"],
            "test_accuracy": last["test_accuracy"],
            "best_test_accuracy": max(r["test_accuracy"] for r in records),
            "train_accuracy": last["train_accuracy"], "final_alignment": last["alignment"],
            "probe": probe}


CLASSIFICATION = Task(
    train.resolve_dataset, _fit_classifier,
    (("dataset", lambda r: r["dataset"]),
     ("epochs (steps)", lambda r: f"{r['epochs']} ({r['steps']})"),
     ("train acc %", lambda r: _pct(r["train_accuracy"])),
     ("test acc %", lambda r: _pct(r["test_accuracy"])),
     ("best test acc %", lambda r: _pct(r["best_test_accuracy"]))),
    datasets.DATASETS)


@dataclass(frozen=True)
class Reproduction:
    name: str
    title: str
    claim: str  # what the published work reports, and what our run shows
    runs: Callable[[bool], list[Run]]  # full schedule?
    schedule: Callable[[bool], str]  # one line describing the schedule
    columns: Columns  # run-specific table columns
    task: Task = CLASSIFICATION


def _build_default(config: TrainConfig, dataset: datasets.Dataset) -> nn.Module:
    return train.build_model(config, dataset.input_shape, dataset.num_classes)


def _enter_backprop(module: nn.Module, args) -> None:
    context = backprop()
    context.__enter__()
    module._backprop_contexts.append(context)


def _leave_backprop(module: nn.Module, args, output) -> None:
    module._backprop_contexts.pop().__exit__(None, None, None)


def _as_backprop(net: nn.Module) -> nn.Module:
    """``net`` with its fastcredit layers run as ordinary autograd in every forward (the BP
    control on the very same architecture, initialisation and activation). Hooks, not a
    wrapper: the layers' names and state-dict keys stay the plain network's."""
    net._backprop_contexts = []
    net.register_forward_pre_hook(_enter_backprop)
    net.register_forward_hook(_leave_backprop, always_call=True)  # also when forward raises
    return net


def _zero_weights(model: nn.Module) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.rsplit(".", 1)[-1] in ("weight", "bias"):
                parameter.zero_()


# --- biotorch-lenet ------------------------------------------------------------------------

# Top-1 test error (%) of LeNet, 100 epochs (Sanfiz & Akrout 2021, ALGORITHMS.md §10.1).
BIOTORCH_LENET_ERROR = {
    "mnist": {"bp": 0.91, "fa": 1.70, "usf": 0.94, "brsf": 0.91, "frsf": 0.97, "dfa": 1.61},
    "fashion-mnist": {"bp": 9.20, "fa": 13.06, "usf": 9.69, "brsf": 10.02, "frsf": 9.61,
                      "dfa": 12.81},
}


def _biotorch_runs(full: bool) -> list[Run]:
    return [
        Run(f"{dataset}-{method}",
            TrainConfig(method=method, model="lenet", dataset=dataset, optimizer="sgd", lr=0.01,
                        weight_decay=1e-3, batch_size=64, epochs=100 if full else 1,
                        lr_milestones=(50, 75) if full else ()),
            info={"published_error": BIOTORCH_LENET_ERROR[dataset][method]})
        for dataset in BIOTORCH_LENET_ERROR for method in BIOTORCH_LENET_ERROR[dataset]
    ]


# --- dfa-bottleneck ------------------------------------------------------------------------

# Launay et al. 2019, standard init (ALGORITHMS.md §4.5): bottleneck size b -> (cosine of the
# bottleneck layer's signal with backprop, mean and std over 128 samples; train / test accuracy
# %), CIFAR-10, 3072-800-800-800-10 tanh, 50 epochs.
LAUNAY_BOTTLENECK = {
    1: (0.069, 0.040, 41.2, 40.5), 3: (0.168, 0.051, 41.9, 41.1), 5: (0.234, 0.061, 42.5, 41.5),
    8: (0.315, 0.068, 43.3, 41.9), 11: (0.374, 0.073, 44.0, 42.8), 18: (0.466, 0.074, 45.3, 43.4),
    28: (0.541, 0.077, 46.8, 44.6), 46: (0.622, 0.072, 49.4, 45.6), 73: (0.692, 0.060, 53.0, 46.8),
    118: (0.760, 0.036, 58.5, 47.9), 191: (0.826, 0.024, 67.7, 47.6),
    308: (0.871, 0.019, 81.4, 46.8), 496: (0.895, 0.076, 94.4, 46.4),
    800: (0.892, 0.134, 99.5, 47.1),
}
BOTTLENECK_WIDTH = 800
BOTTLENECK_SHORT = (1, 5, 18, 73, 191, 496, 800)
BOTTLENECK_TANH = ("2", "4", "6")  # hidden tanh outputs: the DFA points sit there
# dfatools' feedback: one shared matrix, per-point normalisation, softmax - onehot (no 1/N).
BOTTLENECK_DFA = {"preset": "launay2019"}


def _bottleneck_mlp(b: int) -> Builder:
    """784-800-800-800-10 tanh, a DFA point after every hidden tanh (each is the last module
    before the next Linear); layer 2 may train only a fixed random b/800 of its entries."""

    def build(config: TrainConfig, dataset: datasets.Dataset) -> nn.Module:
        width, features = BOTTLENECK_WIDTH, math.prod(dataset.input_shape)
        body = nn.Sequential(
            nn.Flatten(), nn.Linear(features, width), nn.Tanh(),
            Bottleneck(nn.Linear(width, width), b / width, seed=config.seed), nn.Tanh(),
            nn.Linear(width, width), nn.Tanh(), nn.Linear(width, dataset.num_classes))
        return convert(body, "dfa", **config.method_options)

    return build


def _bottleneck_runs(full: bool) -> list[Run]:
    widths = sorted(LAUNAY_BOTTLENECK) if full else BOTTLENECK_SHORT
    config = TrainConfig(method="dfa", model="mlp", hidden=BOTTLENECK_WIDTH,
                         dataset="fashion-mnist", optimizer="adam", lr=1e-4, batch_size=128,
                         epochs=50 if full else 2, method_options=dict(BOTTLENECK_DFA))
    return [Run(f"b{b}", config, build=_bottleneck_mlp(b),
                probe=BOTTLENECK_TANH,
                info={"b": b, "published": LAUNAY_BOTTLENECK[b]}) for b in widths]


def _signal(row: dict, module: str) -> str:
    entry = row["probe"][module]
    return f"{entry['signal_cosine']:.3f} ± {entry['signal_cosine_std']:.3f}"


# --- lra-null-signum -----------------------------------------------------------------------

LRA_WIDTHS = (256, 256, 256)  # hidden layers of the authors' TF1 MNIST / Fashion-MNIST script


def _freeze_all_but_head(model: nn.Module, head: nn.Module | None = None) -> nn.Module:
    """The readout-only control: only ``head`` (default: the model's last module) trains."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in (list(model)[-1] if head is None else head).parameters():
        parameter.requires_grad_(True)
    return model


def _lra_mlp(activation: str, weight_init: str, readout: bool = False,
             surrogate: str | None = "hardtanh") -> Builder:
    def build(config: TrainConfig, dataset: datasets.Dataset) -> nn.Module:
        widths = [math.prod(dataset.input_shape), *LRA_WIDTHS, dataset.num_classes]
        model = LRA(widths, activation, beta=0.1, gamma=1.0, weight_init=weight_init,
                    surrogate=surrogate)
        return _freeze_all_but_head(model) if readout else model

    return build


def _lra_runs(full: bool) -> list[Run]:
    config = TrainConfig(method="lra", model="mlp", dataset="fashion-mnist", optimizer="adam",
                         lr=1e-3, batch_size=50, epochs=100 if full else 1)
    bp = replace(config, method="bp")
    rows = [
        ("lra-tanh", config, "tanh", "normal", "lra", "trains (reference)"),
        ("readout-tanh", config, "tanh", "normal", "readout", "control"),
        ("lra-tanh-null", config, "tanh", "zero", "lra", "trains"),
        ("bp-tanh-null", bp, "tanh", "zero", "bp", "does not train"),
        ("lra-sign", config, "sign", "normal", "lra", "trains"),
        ("readout-sign", config, "sign", "normal", "readout", "control"),
        ("bp-sign", bp, "sign", "normal", "bp", "hidden layers get no gradient"),
        ("lra-sign-null", config, "sign", "zero", "lra", "trains"),
        ("readout-sign-null", config, "sign", "zero", "readout", "control"),
        ("lra-sign-exact", config, "sign", "normal", "exact", "the exact rule (no surrogate)"),
    ]
    return [Run(run_id, cfg, backprop=kind == "bp",
                build=_lra_mlp(activation, init, readout=kind == "readout",
                               surrogate=None if kind == "exact" else "hardtanh"),
                info={"activation": activation, "init": init, "published": claim})
            for run_id, cfg, activation, init, kind, claim in rows]


# --- lra-conv ------------------------------------------------------------------------------

def _lra_conv_net(readout: bool = False) -> Builder:
    """A small tanh conv net (conv 5x5 32, max-pool, conv 5x5 64, max-pool, linear),
    converted to LRA blocks; the readout control trains only its last layer."""
    def build(config: TrainConfig, dataset: datasets.Dataset) -> nn.Module:
        side = dataset.input_shape[-1] // 4
        net = nn.Sequential(
            nn.Unflatten(1, (1, dataset.input_shape[0])) if len(dataset.input_shape) == 2
            else nn.Identity(),
            nn.Conv2d(1, 32, 5, padding=2), nn.Tanh(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * side * side, dataset.num_classes))
        model = convert(net, "lra", beta=0.1, gamma=1.0)
        return _freeze_all_but_head(model) if readout else model

    return build


def _lra_resnet(readout: bool = False) -> Builder:
    """`fastcredit train --model resnet`'s network converted to LRA (BatchNorm stays
    backprop; each residual add is left as is); the readout control trains only ``fc``."""
    def build(config: TrainConfig, dataset: datasets.Dataset) -> nn.Module:
        model = convert(models.ResNet(dataset.num_classes), "lra", beta=0.1, gamma=1.0)
        return _freeze_all_but_head(model, model.fc) if readout else model

    return build


def _lra_conv_runs(full: bool) -> list[Run]:
    config = TrainConfig(method="lra", model="convnet", dataset="fashion-mnist",
                         optimizer="adam", lr=1e-3, batch_size=50, epochs=20 if full else 1)
    resnet = replace(config, model="resnet")
    return [Run("lra-conv", config, build=_lra_conv_net(), info={"role": "LRA"}),
            Run("readout-conv", config, build=_lra_conv_net(readout=True),
                info={"role": "control: hidden layers frozen"}),
            Run("bp-conv", replace(config, method="bp"), build=_lra_conv_net(), backprop=True,
                info={"role": "control: backprop, same net"}),
            Run("lra-resnet", resnet, build=_lra_resnet(), info={"role": "LRA"}),
            Run("readout-resnet", resnet, build=_lra_resnet(readout=True),
                info={"role": "control: hidden layers frozen"}),
            Run("bp-resnet", replace(resnet, method="bp"), build=_lra_resnet(), backprop=True,
                info={"role": "control: backprop, same net"})]


# --- dfa-zero-init -------------------------------------------------------------------------

# Nøkland 2016, MNIST 2x800 tanh test error (%): ALGORITHMS.md §10.4 marks these as an
# unverified recollection; the zero-initialisation claim itself is from the abstract.
NOKLAND_2X800_ERROR = {"bp": 1.60, "fa": 1.64, "dfa": 1.74}


def _zero_init_runs(full: bool) -> list[Run]:
    config = TrainConfig(model="mlp", hidden=800, dataset="mnist", optimizer="rmsprop", lr=1e-4,
                         batch_size=64, epochs=300 if full else 1)
    dfa = replace(config, method="dfa", method_options={"preset": "nokland2016"})
    rows = [
        ("dfa-zero", dfa, True, "trains from zero"),
        ("fa-zero", replace(config, method="fa"), True, "trains from zero"),
        ("bp-zero", replace(config, method="bp"), True, "does not train"),
        ("dfa-default", dfa, False, "control"),
        ("bp-default", replace(config, method="bp"), False, "control"),
    ]
    return [Run(run_id, cfg, zero_init=zero,
                info={"init": "zero" if zero else "default", "published": claim,
                      "published_error": NOKLAND_2X800_ERROR[cfg.method]})
            for run_id, cfg, zero, claim in rows]


# --- fashion-mnist-methods -----------------------------------------------------------------

def _methods_runs(full: bool) -> list[Run]:
    return [Run(method, TrainConfig(method=method, model="mlp", hidden=256,
                                    dataset="fashion-mnist", optimizer="adam", lr=1e-3,
                                    batch_size=64, epochs=20 if full else 3))
            for method in train.METHODS]


def _update_alignment(row: dict) -> str:
    return " / ".join(f"{v:.2f}" for v in row["final_alignment"].values())


# --- transformer-lm ------------------------------------------------------------------------

LM_CONTEXT, LM_LAYERS, LM_HEADS = 64, 2, 4
LM_METHODS = ("bp", "fa", "usf", "frsf", "brsf", "kp", "dfa")


def _char_transformer(readout: bool = False) -> Builder:
    """lm.CharTransformer (width ``config.hidden``) converted to ``config.method`` (bp: the
    plain torch model); the readout control trains only the head."""
    def build(config: TrainConfig, corpus: datasets.TextDataset) -> nn.Module:
        model = lm.CharTransformer(corpus.vocab_size, LM_CONTEXT, config.hidden, LM_LAYERS,
                                   LM_HEADS)
        if config.method != "bp":
            model = convert(model, config.method, **config.method_options)
        return _freeze_all_but_head(model, model.head) if readout else model

    return build


def _fit_language_model(config: TrainConfig, model: nn.Module,
                        corpus: datasets.TextDataset, spec: Run, log) -> dict:
    records = lm.train(config, model, corpus, LM_CONTEXT, log)
    last = records[-1]
    return {"epochs": last["epoch"], "steps": last["steps"], "train_nats": last["train_nats"],
            "test_nats": last["test_nats"], "test_accuracy": last["test_accuracy"],
            "best_test_nats": min(r["test_nats"] for r in records)}


LANGUAGE_MODEL = Task(
    lambda name, data_dir, download: datasets.load_text(name, data_dir), _fit_language_model,
    (("corpus", lambda r: r["dataset"]),
     ("epochs (steps)", lambda r: f"{r['epochs']} ({r['steps']})"),
     ("train nats/char", lambda r: f"{r['train_nats']:.4f}"),
     ("test nats/char", lambda r: f"{r['test_nats']:.4f}"),
     ("test perplexity/char", lambda r: f"{lm.perplexity(r['test_nats']):.3f}"),
     ("test bits/char", lambda r: f"{lm.bits_per_character(r['test_nats']):.4f}"),
     ("test next-char acc %", lambda r: _pct(r["test_accuracy"]))),
    datasets.TEXT_CORPORA)


def _lm_runs(full: bool) -> list[Run]:
    config = TrainConfig(model="transformer", dataset="fortunes", hidden=64, optimizer="adam",
                         lr=1e-3, batch_size=32, epochs=20 if full else 3,
                         lr_milestones=(15,) if full else ())
    roles = {"bp": "control: backprop, same net"}
    return [
        *(Run(method, replace(config, method=method), build=_char_transformer(),
              info={"role": roles.get(method, "method")}) for method in LM_METHODS),
        # Launay et al. 2020's own LM code projects the error at the vocabulary projection's
        # input, not the logits' (its --dfa_after_vocab flag off).
        Run("dfa-head-input", replace(config, method="dfa",
                                      method_options={"error_at": "head_input"}),
            build=_char_transformer(),
            info={"role": "method: the error at the head's input (Launay 2020's LM placement)"}),
        Run("dfa-sublayers", replace(config, method="dfa", method_options={"sublayers": True}),
            build=_char_transformer(),
            info={"role": "method: TinyDFA's finer placement (a point after attention too)"}),
        Run("readout", config, build=_char_transformer(readout=True),
            info={"role": "control: only the head trains"}),
    ]


REPRODUCTIONS = {
    r.name: r for r in (
        Reproduction(
            "biotorch-lenet",
            "BioTorch LeNet benchmark: BP, FA, uSF, brSF, frSF, DFA on MNIST and Fashion-MNIST",
            "Sanfiz & Akrout 2021 (biotorch Benchmarks.md): top-1 test error of LeNet after 100 "
            "epochs, SGD momentum 0.9, weight decay 1e-3, batch 64, lr /10 at epochs 50 and 75.",
            _biotorch_runs,
            lambda full: ("full: 100 epochs, lr 0.01 /10 at 50 and 75" if full else
                          "short: 1 epoch (published: 100), lr 0.01")
            + ", SGD momentum 0.9, weight decay 1e-3, batch 64, tanh LeNet on 28x28 (pad 2)",
            (("published error % (100 ep)", lambda r: f"{r['published_error']:.2f}"),
             ("our error %", lambda r: f"{100 - 100 * r['test_accuracy']:.2f}"))),
        Reproduction(
            "dfa-bottleneck",
            "Launay 2019 bottleneck: DFA alignment vs the trainable fraction of one layer",
            "Launay, Poli, Krzakala 2019 (CIFAR-10, 3072-800-800-800-10 tanh, 50 epochs): the "
            "bottleneck layer's signal cosine with backprop rises from 0.07 (b = 1) to 0.89 "
            "(b = 800). Ours: the same net on Fashion-MNIST (784 inputs), DFA at every hidden "
            "layer with Launay's feedback (preset launay2019: one shared matrix, softmax - "
            "onehot without 1/N, so hidden gradients are 128x a mean loss's at batch 128 and "
            "their SGD 5e-4 would apply as published), Adam lr 1e-4 instead of that SGD "
            "(Adam's step hardly depends on the gradient's scale).",
            _bottleneck_runs,
            lambda full: ("full: 50 epochs, b in all 14 published sizes" if full else
                          f"short: 2 epochs (published: 50), b in {BOTTLENECK_SHORT}")
            + ", Adam lr 1e-4, batch 128, DFA preset launay2019",
            (("b", lambda r: str(r["b"])),
             ("layer 1 cos", lambda r: _signal(r, BOTTLENECK_TANH[0])),
             ("bottleneck cos", lambda r: _signal(r, BOTTLENECK_TANH[1])),
             ("layer 3 cos", lambda r: _signal(r, BOTTLENECK_TANH[2])),
             ("published bottleneck cos", lambda r: "{:.3f} ± {:.3f}".format(*r["published"])),
             ("published train / test % (CIFAR-10)",
              lambda r: "{2:.1f} / {3:.1f}".format(*r["published"])))),
        Reproduction(
            "lra-null-signum",
            "LRA-E: null initialisation and signum networks train, backprop does not",
            "Ororbia et al. (arXiv 1803.01834, abstract): LRA trains from a null (all-zero) "
            "initialisation and with discrete (signum) activations, where backprop fails. No "
            "verified numbers exist; the claim is qualitative. Sign units form their targets "
            "through hardtanh (fastcredit's choice, not the paper's verified rule; "
            "lra-sign-exact: without it); readout-*: the same net with hidden layers frozen.",
            _lra_runs,
            lambda full: ("full: 100 epochs" if full else "short: 1 epoch (authors' code: 100)")
            + ", 784-256-256-256-10, beta 0.1, gamma 1, Adam lr 1e-3, batch 50",
            (("activation", lambda r: r["activation"]), ("W init", lambda r: r["init"]),
             ("published", lambda r: r["published"]))),
        Reproduction(
            "lra-conv",
            "LRA-E beyond MLPs: a converted conv net and ResNet beside readout and backprop",
            "No published number: LRA-E's papers train MLPs (rec-LRA trains ResNets, "
            "arXiv 2002.03911, unverified here). Ours: convert(model, 'lra') of a conv net and "
            "of a small ResNet, each against the same net with hidden layers frozen (readout) "
            "and trained by backprop.",
            _lra_conv_runs,
            lambda full: ("full: 20 epochs" if full else "short: 1 epoch")
            + "; conv: conv5x5 32 tanh, max-pool, conv5x5 64 tanh, max-pool, linear; resnet: "
              "`train --model resnet` (conv3x3 16-BN-ReLU stem, basic blocks at 16 and 32 "
              "channels, average pool, linear; BN stays backprop); beta 0.1, gamma 1, Adam lr "
              "1e-3, batch 50",
            (("role", lambda r: r["role"]),)),
        Reproduction(
            "dfa-zero-init",
            "Nøkland 2016: DFA (and FA) learn from an all-zero initialisation, BP does not",
            "Nøkland 2016: DFA trains from a zero initial condition (abstract); 2x800 tanh MNIST "
            "test errors BP 1.60 / FA 1.64 / DFA 1.74 % are an unverified recollection.",
            _zero_init_runs,
            lambda full: ("full: 300 epochs (dfa-torch default)" if full else
                          "short: 1 epoch (published: up to 300)")
            + ", MNIST 784-800-800-10 tanh, RMSprop lr 1e-4, batch 64, DFA preset nokland2016 "
              "(feedback uniform ±1/sqrt(d) per point, error without 1/N)",
            (("init", lambda r: r["init"]), ("published", lambda r: r["published"]),
             ("published error % (unverified)", lambda r: f"{r['published_error']:.2f}"),
             ("our error %", lambda r: f"{100 - 100 * r['test_accuracy']:.2f}"))),
        Reproduction(
            "fashion-mnist-methods",
            "Every method on Fashion-MNIST, one MLP (no published anchor: our own baseline)",
            "Not a published experiment: the same 784-256-256-10 tanh MLP trained by each of "
            "the eight methods, to compare them under one setting.",
            _methods_runs,
            lambda full: ("full: 20 epochs" if full else "short: 3 epochs")
            + ", 784-256-256-10 tanh, the same initial weights for every method, Adam lr 1e-3, "
              "batch 64",
            (("update cosine per layer, input to output", _update_alignment),)),
        Reproduction(
            "transformer-lm",
            "A character transformer language model on real text (Debian's fortunes) by every "
            "feedback method",
            "Launay, Poli, Boniface, Krzakala 2020 (NeurIPS; abstract): DFA trains "
            "Transformers for language modelling, with a larger gap to backprop than on their "
            "other tasks (their WikiText-103 perplexities are unverified here, none quoted). "
            "Ours: a 2-block causal character transformer (width 64, 4 heads, context 64) on "
            "the fortune-mod cookie files, every method from the same initial weights; "
            "controls: backprop (bp) and the same net with only its head trained (readout).",
            _lm_runs,
            lambda full: ("full: 20 epochs, lr /10 after 15" if full else "short: 3 epochs")
            + f" (an epoch: one pass over the training characters), Adam lr 1e-3, batch 32 "
              f"windows of {LM_CONTEXT} characters, 2 pre-norm blocks, width 64, 4 heads, "
              "DFA: one point per block (dfa-head-input: the error at the head's input; "
              "dfa-sublayers: one after each block's attention as well)",
            (("role", lambda r: r["role"]),),
            LANGUAGE_MODEL),
    )
}


def build_model(spec: Run, dataset: Data, seed: int = 0) -> nn.Module:
    """The network of run ``spec``, initialised as the run prescribes."""
    torch.manual_seed(seed)
    model = (spec.build or _build_default)(spec.config, dataset)
    if spec.zero_init:
        _zero_weights(model)
    return _as_backprop(model) if spec.backprop else model


def run(name: str, *, full: bool = False, out: str | Path | None = None,
        data_dir: str | None = None, download: bool = False, threads: int | None = None,
        seed: int = 0, only: str | None = None, dataset: str | None = None,
        max_steps: int | None = None, epochs: int | None = None, progress: bool = False,
        command: str = "",
        log=print) -> dict:
    """Run reproduction ``name``; writes ``out/results.json`` and ``out/results.md`` and
    returns the results. ``only``: run just the runs whose id contains this text;
    ``dataset``, ``max_steps`` and ``epochs`` override every run's (a different experiment
    from the published one: longer runs, smoke tests, machines without the data)."""
    reproduction = REPRODUCTIONS[name]
    task = reproduction.task
    if dataset is not None and dataset not in task.datasets:
        raise ValueError(f"{name} trains on one of {task.datasets}, not {dataset!r}")
    out = Path(out or f"reproduce-{name}")
    runs = [r for r in reproduction.runs(full) if only is None or only in r.id]
    if not runs:
        raise ValueError(f"only={only!r} matches no run of {name}")
    loaded: dict[str, Data] = {}
    rows, configs = [], {}
    for spec in runs:
        config = replace(spec.config, out=str(out / spec.id), data_dir=data_dir,
                         download=download, threads=threads, seed=seed, progress=progress,
                         dataset=dataset or spec.config.dataset,
                         max_steps=max_steps or spec.config.max_steps,
                         epochs=epochs or spec.config.epochs)
        configs[spec.id] = _config_dict(config)  # as run, overrides included
        if config.dataset not in loaded:
            loaded[config.dataset] = task.load(config.dataset, data_dir, download)
        data = loaded[config.dataset]
        if threads:
            torch.set_num_threads(threads)
        model = build_model(replace(spec, config=config), data, seed)
        log(f"== {name} / {spec.id}")
        start = time.perf_counter()
        measured = task.fit(config, model, data, spec, log)
        seconds = time.perf_counter() - start
        rows.append({"id": spec.id, "method": config.method, "dataset": data.name, "seed": seed,
                     **measured, "seconds": round(seconds, 1), **spec.info})
    results = {
        "name": name, "title": reproduction.title, "claim": reproduction.claim,
        "schedule": "full" if full else "short", "schedule_detail": reproduction.schedule(full),
        "command": command, "threads": threads or torch.get_num_threads(),
        "torch": torch.__version__, "runs": rows,
        "configs": configs,
        "overrides": {"dataset": dataset, "max_steps": max_steps, "epochs": epochs},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(markdown(results, reproduction))
    log(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return results


def _config_dict(config: TrainConfig) -> dict:
    keep = ("method", "model", "dataset", "epochs", "batch_size", "lr", "optimizer",
            "weight_decay", "lr_milestones", "hidden", "max_steps", "method_options")
    return {k: v for k, v in asdict(config).items() if k in keep}


def _schedule(results: dict) -> str:
    epochs = results["overrides"].get("epochs")
    detail = results["schedule_detail"]
    return detail if epochs is None else f"{epochs} epochs (--epochs) instead of the {detail}"


def markdown(results: dict, reproduction: Reproduction) -> str:
    """The results as a markdown section: claim, schedule, command, then one row per run."""
    changed = {k: v for k, v in results["overrides"].items() if v is not None}
    overridden = ("**Settings overridden** (" + ", ".join(f"{k} = {v}" for k, v in changed.items())
                  + "): not the published experiment.") if changed else ""
    columns = (*reproduction.task.columns, *reproduction.columns)
    headers = ["run", "method", *(h for h, _ in columns)]
    lines = [
        f"### {results['title']}", "",
        results["claim"], "",
        (f"Schedule: **{_schedule(results)}**; seed {results['runs'][0]['seed']}, "
         f"{results['threads']} thread(s), torch {results['torch']}."),
        f"Command: `{results['command']}`" if results["command"] else "",
        overridden, "",
        "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
    ]
    for row in results["runs"]:
        cells = [row["id"], row["method"], *(fn(row) for _, fn in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
