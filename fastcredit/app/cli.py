"""The `fastcredit` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _info(args: argparse.Namespace) -> int:
    import torch

    import fastcredit

    info = fastcredit.build_info()
    info["torch_threads"] = torch.get_num_threads()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    ops = sorted(
        name.split("::")[1]
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith("fastcredit::")
    )
    print(f"{'ops':<{width}}  {', '.join(ops)}")
    return 0


_FLOAT32_MAX = 3.4028234663852886e38  # torch's optimizers multiply in float32


def _number(text: str, kind, requirement: str):
    """``kind(text)``; a text that is no such number is the same one-line error as a number
    out of range (argparse would name this function instead)."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}") from None


def _positive_int(text: str) -> int:
    requirement = "a positive integer"
    value = _number(text, int, requirement)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
    return value


def _positive_float(text: str) -> float:
    requirement = "a positive number below 3.4e38 (float32)"
    value = _number(text, float, requirement)
    if not 0 < value <= _FLOAT32_MAX:
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    requirement = "a number >= 0 and below 3.4e38 (float32)"
    value = _number(text, float, requirement)
    if not 0 <= value <= _FLOAT32_MAX:
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
    return value


def _seed(text: str) -> int:
    from .._spec import check_seed  # the library's one seed rule and its message

    value = _number(text, int, "an integer with 0 <= seed < 2**64")
    try:
        return check_seed(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("seed ")) from None


def _milestones(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
        raise argparse.ArgumentTypeError(
            f"must be increasing positive epochs separated by commas, got {text!r}")
    return values


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _guarded(command: str, work) -> int:
    """Runs ``work()``; a failure the user can cause (missing or corrupt data, a failed
    download, a failed training, an unwritable output, memory) is one line and status 1."""
    import torch

    from . import data, train

    try:
        work()
    except data.DatasetNotFoundError as error:
        message = _one_line(error)
    except data.DataError as error:
        message = f"data: {_one_line(error)}"
    except train.TrainingError as error:
        message = _one_line(error)
    except OSError as error:
        message = _one_line(error)
    except (MemoryError, torch.OutOfMemoryError) as error:
        message = f"out of memory ({_one_line(error)[:200]}): use a smaller --batch-size/--hidden"
    except RuntimeError as error:
        if "can't allocate memory" not in str(error):
            raise
        message = f"out of memory ({_one_line(error)[:200]}): use a smaller --batch-size/--hidden"
    else:
        return 0
    print(f"fastcredit {command}: error: {message}", file=sys.stderr)
    return 1


def _train(args: argparse.Namespace) -> int:
    from . import train

    config = train.TrainConfig(
        model=args.model, dataset=args.dataset, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        weight_decay=args.weight_decay, lr_milestones=args.lr_milestones, seed=args.seed,
        threads=args.threads, hidden=args.hidden, max_steps=args.max_steps,
        data_dir=args.data_dir, download=args.download, out=args.out,
        progress=not args.no_progress, alignment_every=args.alignment_every)
    command = " ".join(["fastcredit", *args.argv])
    return _guarded("train", lambda: train.compare(config, args.method, command=command))


def _reproduce(args: argparse.Namespace) -> int:
    from . import reproduce

    command = " ".join(["fastcredit", *args.argv])
    return _guarded("reproduce", lambda: reproduce.run(
        args.name, full=args.full, out=args.out, data_dir=args.data_dir, download=args.download,
        threads=args.threads, seed=args.seed, only=args.only, dataset=args.dataset,
        max_steps=args.max_steps, epochs=args.epochs, progress=not args.no_progress,
        command=command))


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    if args.biotorch and not bench.biotorch_available():
        print("fastcredit bench: --biotorch needs BioTorch (pip install --no-deps biotorch)",
              file=sys.stderr)
        return 2
    return _guarded("bench", lambda: bench.main(
        quick=args.quick, threads=args.threads, rounds=args.rounds, json_path=args.json,
        methods=args.methods, workloads=args.workloads,
        biotorch=True if args.biotorch else None))


class _Parser(argparse.ArgumentParser):
    """Reports a bad argument as one line and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Appends each option's default to its help unless the help already states it."""

    def _get_help_string(self, action):
        if "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    """Where the data comes from and whether progress is shown: train's and reproduce's."""
    parser.add_argument("--data-dir", default=None,
                        help="directory holding <dataset>/ sub-directories of idx files (or "
                             "of a text corpus's files), or those files themselves (default: "
                             "the search path in docs/cli.md)")
    parser.add_argument("--download", action="store_true",
                        help="download a missing dataset (checksums verified)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar or progress lines")


def _info_parser() -> tuple[_Parser, argparse._SubParsersAction]:
    """The top-level parser with its one command that needs nothing but the library."""
    parser = _Parser(prog="fastcredit", description=__doc__, formatter_class=_Help)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    info = commands.add_parser("info", help="how fastcredit was built and what is loaded",
                               formatter_class=_Help,
                               description="How fastcredit was built and what is loaded.")
    info.add_argument("--json", action="store_true",
                      help="print the build information as JSON (without the op list)")
    info.set_defaults(run=_info)
    return parser, commands


def _parser() -> _Parser:
    from . import bench, data, reproduce, train

    parser, commands = _info_parser()

    run = commands.add_parser(
        "train", help="train a network with one or several credit-assignment methods",
        formatter_class=_Help,
        description="Train a network with one or several credit-assignment methods, each from "
                    "the same initial weights, data order and seed. Writes OUT/<method>/ "
                    "(metrics.json, metrics.csv, steps.csv, curves.png) and OUT/curves.png, "
                    "OUT/summary.md comparing the methods.")
    run.add_argument("--method", nargs="+", choices=train.METHODS, default=["bp"],
                     metavar="METHOD",
                     help=f"one or several of {' '.join(train.METHODS)}, see docs/methods.md "
                          "(default: bp)")
    run.add_argument("--model", choices=train.MODELS, default="mlp",
                     help="mlp (2 tanh hidden layers), lenet (images >= 16x16), convnet or "
                          "resnet (see docs/cli.md)")
    run.add_argument("--dataset", choices=("auto", *data.DATASETS), default="auto",
                     help="auto: Fashion-MNIST if installed, else sklearn digits")
    run.add_argument("--epochs", type=_positive_int, default=1,
                     help="passes over the training set")
    run.add_argument("--batch-size", type=_positive_int, default=64,
                     help="training examples per step")
    run.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate")
    run.add_argument("--optimizer", choices=train.OPTIMIZERS, default="adam",
                     help="the optimizer; sgd has momentum 0.9")
    run.add_argument("--weight-decay", type=_non_negative_float, default=0.0,
                     help="the optimizer's L2 weight decay (kp: the feedback weights too)")
    run.add_argument("--lr-milestones", type=_milestones, default=(), metavar="E1,E2,...",
                     help="divide the learning rate by 10 after these epochs (default: never)")
    run.add_argument("--seed", type=_seed, default=0,
                     help="seeds the initial weights, feedback matrices and data order")
    run.add_argument("--threads", type=_positive_int, default=None,
                     help="CPU threads for torch (default: torch's choice)")
    run.add_argument("--hidden", type=_positive_int, default=256,
                     help="width of the MLP's hidden layers")
    run.add_argument("--max-steps", type=_positive_int, default=None,
                     help="stop each method after this many optimizer steps (default: no limit)")
    run.add_argument("--alignment-every", type=_positive_int, default=None, metavar="STEPS",
                     help="steps between alignment measurements in steps.csv (default: about "
                          f"{train.ALIGNMENT_POINTS} per run)")
    run.add_argument("--out", default="fastcredit-run", help="output directory")
    _add_data_options(run)
    run.set_defaults(run=_train)

    again = commands.add_parser(
        "reproduce", help="re-run a published experiment (short schedule unless --full)",
        formatter_class=_Help,
        description="Re-run a published experiment: a short schedule, or the published one "
                    "with --full. Writes OUT/<run id>/ per run and OUT/results.{json,md}.")
    again.add_argument("name", choices=tuple(reproduce.REPRODUCTIONS),
                       help="the experiment (see docs/cli.md)")
    again.add_argument("--full", action="store_true",
                       help="the published schedule (hours on a CPU) instead of the short one")
    again.add_argument("--out", default=None, help="output directory (default: reproduce-NAME)")
    again.add_argument("--only", default=None, metavar="TEXT",
                       help="run only the runs whose id contains TEXT (default: every run)")
    again.add_argument("--seed", type=_seed, default=0,
                       help="seeds the initial weights, feedback matrices and data order")
    again.add_argument("--dataset", choices=(*data.DATASETS, *data.TEXT_CORPORA), default=None,
                       help="replace every run's dataset (an image dataset, or a text corpus "
                            "for transformer-lm): no longer the published experiment (default: "
                            "each run's own)")
    again.add_argument("--epochs", type=_positive_int, default=None,
                       help="replace every run's number of epochs (transformer-lm: passes over "
                            "the training characters): a schedule between the short and the "
                            "published one (default: each run's own)")
    again.add_argument("--max-steps", type=_positive_int, default=None,
                       help="stop every run after this many steps, for smoke tests (default: "
                            "no limit)")
    again.add_argument("--threads", type=_positive_int, default=None,
                       help="CPU threads for torch (default: torch's choice)")
    _add_data_options(again)
    again.set_defaults(run=_reproduce)

    timing = commands.add_parser(
        "bench", help="training-step time of every method relative to backprop (and BioTorch)",
        formatter_class=_Help,
        description="Time one training step of every method relative to backprop on fixed "
                    "workloads (interleaved rounds, median), and BioTorch's when importable.")
    timing.add_argument("--quick", action="store_true", help="tiny shapes, 2 rounds (smoke run)")
    timing.add_argument("--threads", type=_positive_int, default=2, help="CPU threads for torch")
    timing.add_argument("--rounds", type=_positive_int, default=None,
                        help="interleaved rounds (default: 7, 2 with --quick)")
    timing.add_argument("--methods", nargs="+", choices=bench.METHODS, default=bench.METHODS,
                        metavar="METHOD", help=f"subset of {' '.join(bench.METHODS)} (default: "
                                               "all)")
    timing.add_argument("--workloads", nargs="+", default=None, metavar="NAME",
                        choices=[w.name for w in (*bench.WORKLOADS, *bench.QUICK_WORKLOADS)],
                        help="subset of " + " ".join(w.name for w in bench.WORKLOADS)
                             + " (default: all, or the quick ones with --quick)")
    timing.add_argument("--biotorch", action="store_true",
                        help="require BioTorch (by default it is compared when importable)")
    timing.add_argument("--json", default=None, metavar="PATH",
                        help="also write the results to PATH (default: not written)")
    timing.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        from . import reproduce  # the application's modules need the `app` extra
    except ImportError as missing:  # the library alone: `info` works, the rest says why not
        if argv[:1] != ["info"]:
            print(f"fastcredit {' '.join(argv[:1])}: needs the application's dependencies: "
                  f"pip install 'fastcredit[app]' ({missing})".replace("  ", " "),
                  file=sys.stderr)
            return 1
        args = _info_parser()[0].parse_args(argv)
        return args.run(args)
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command == "train" and len(set(args.method)) != len(args.method):
        parser.exit(2, f"fastcredit train: error: argument --method: a method is named twice: "
                       f"{' '.join(args.method)}\n")
    if args.command == "reproduce" and args.only is not None:
        ids = [r.id for r in reproduce.REPRODUCTIONS[args.name].runs(args.full)]
        if not any(args.only in run_id for run_id in ids):
            parser.error(f"argument --only: {args.only!r} matches no run of {args.name} "
                         f"(runs: {', '.join(ids)})")
    if args.command == "reproduce" and args.dataset is not None:
        accepted = reproduce.REPRODUCTIONS[args.name].task.datasets
        if args.dataset not in accepted:
            parser.error(f"argument --dataset: {args.name} trains on one of "
                         f"{', '.join(accepted)}, not {args.dataset}")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"fastcredit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `fastcredit info | head`: the reader left, nothing to say
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the exit-time flush
        return 1


if __name__ == "__main__":
    sys.exit(main())
