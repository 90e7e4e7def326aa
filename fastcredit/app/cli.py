"""The `fastcredit` command line."""

from __future__ import annotations

import argparse
import json
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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"must satisfy 0 <= seed < 2**64, got {text}")
    return value


def _milestones(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
        raise argparse.ArgumentTypeError(
            f"must be increasing positive epochs separated by commas, got {text!r}")
    return values


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _guarded(command: str, work) -> int:
    """Runs ``work()``; a missing dataset or a failed training is one message and status 1."""
    from . import data, train

    try:
        work()
    except data.DatasetNotFoundError as error:
        print(f"fastcredit {command}: {error}", file=sys.stderr)
        return 1
    except train.TrainingError as error:
        print(f"fastcredit {command}: error: {error}", file=sys.stderr)
        return 1
    return 0


def _train(args: argparse.Namespace) -> int:
    from . import train

    config = train.TrainConfig(
        method=args.method, model=args.model, dataset=args.dataset, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        weight_decay=args.weight_decay, lr_milestones=args.lr_milestones, seed=args.seed,
        threads=args.threads, hidden=args.hidden, max_steps=args.max_steps,
        data_dir=args.data_dir, download=args.download, out=args.out,
        progress=not args.no_progress)
    return _guarded("train", lambda: train.train(config))


def _reproduce(args: argparse.Namespace) -> int:
    from . import reproduce

    command = " ".join(["fastcredit", *args.argv])
    return _guarded("reproduce", lambda: reproduce.run(
        args.name, full=args.full, out=args.out, data_dir=args.data_dir, download=args.download,
        threads=args.threads, seed=args.seed, only=args.only, dataset=args.dataset,
        max_steps=args.max_steps, progress=not args.no_progress, command=command))


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    if args.biotorch and not bench.biotorch_available():
        print("fastcredit bench: --biotorch needs BioTorch (pip install --no-deps biotorch)",
              file=sys.stderr)
        return 2
    bench.main(quick=args.quick, threads=args.threads, rounds=args.rounds, json_path=args.json,
               methods=args.methods, workloads=args.workloads,
               biotorch=True if args.biotorch else None)
    return 0


class _Parser(argparse.ArgumentParser):
    """Reports a bad argument as one line and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    from . import data, reproduce, train

    parser = _Parser(prog="fastcredit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    info = commands.add_parser("info", help="how fastcredit was built and what is loaded")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")
    info.set_defaults(run=_info)

    run = commands.add_parser("train", help="train a network with a credit-assignment method")
    run.add_argument("--method", choices=train.METHODS, default="bp")
    run.add_argument("--model", choices=train.MODELS, default="mlp")
    run.add_argument("--dataset", choices=("auto", *data.DATASETS), default="auto",
                     help="auto: Fashion-MNIST if installed, else sklearn digits")
    run.add_argument("--epochs", type=_positive_int, default=1)
    run.add_argument("--batch-size", type=_positive_int, default=64)
    run.add_argument("--lr", type=_positive_float, default=1e-3)
    run.add_argument("--optimizer", choices=train.OPTIMIZERS, default="adam",
                     help="sgd has momentum 0.9")
    run.add_argument("--weight-decay", type=_non_negative_float, default=0.0)
    run.add_argument("--lr-milestones", type=_milestones, default=(), metavar="E1,E2,...",
                     help="divide the learning rate by 10 after these epochs")
    run.add_argument("--seed", type=_seed, default=0)
    run.add_argument("--threads", type=_positive_int, default=None)
    run.add_argument("--hidden", type=_positive_int, default=256, help="MLP width")
    run.add_argument("--max-steps", type=_positive_int, default=None,
                     help="stop after this many optimizer steps")
    run.add_argument("--data-dir", default=None, help="directory holding the idx files")
    run.add_argument("--download", action="store_true",
                     help="download a missing dataset (checksums verified)")
    run.add_argument("--out", default="fastcredit-run", help="output directory")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(run=_train)

    again = commands.add_parser(
        "reproduce", help="re-run a published experiment (short schedule unless --full)")
    again.add_argument("name", choices=tuple(reproduce.REPRODUCTIONS))
    again.add_argument("--full", action="store_true",
                       help="the published schedule (hours on a CPU) instead of the short one")
    again.add_argument("--out", default=None, help="output directory (default reproduce-NAME)")
    again.add_argument("--only", default=None, metavar="TEXT",
                       help="run only the runs whose id contains TEXT")
    again.add_argument("--seed", type=_seed, default=0)
    again.add_argument("--dataset", choices=data.DATASETS, default=None,
                       help="replace every run's dataset (no longer the published experiment)")
    again.add_argument("--max-steps", type=_positive_int, default=None,
                       help="stop every run after this many steps (smoke tests)")
    again.add_argument("--threads", type=_positive_int, default=None)
    again.add_argument("--data-dir", default=None,
                       help="directory holding <dataset>/ sub-directories of idx files")
    again.add_argument("--download", action="store_true",
                       help="download a missing dataset (checksums verified)")
    again.add_argument("--no-progress", action="store_true", help="no progress bar")
    again.set_defaults(run=_reproduce)

    from . import bench

    timing = commands.add_parser(
        "bench", help="training-step time of every method relative to backprop (and BioTorch)")
    timing.add_argument("--quick", action="store_true", help="tiny shapes, 2 rounds (smoke run)")
    timing.add_argument("--threads", type=_positive_int, default=2)
    timing.add_argument("--rounds", type=_positive_int, default=None,
                        help="interleaved rounds (default 7, 2 with --quick)")
    timing.add_argument("--methods", nargs="+", choices=bench.METHODS, default=bench.METHODS,
                        metavar="METHOD", help=f"subset of {' '.join(bench.METHODS)}")
    timing.add_argument("--workloads", nargs="+", default=None, metavar="NAME",
                        choices=[w.name for w in (*bench.WORKLOADS, *bench.QUICK_WORKLOADS)],
                        help="subset of " + " ".join(w.name for w in bench.WORKLOADS))
    timing.add_argument("--biotorch", action="store_true",
                        help="require BioTorch (by default it is compared when importable)")
    timing.add_argument("--json", default=None, metavar="PATH", help="also write the results")
    timing.set_defaults(run=_bench)

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command == "reproduce" and args.only is not None:
        ids = [r.id for r in reproduce.REPRODUCTIONS[args.name].runs(args.full)]
        if not any(args.only in run_id for run_id in ids):
            parser.error(f"argument --only: {args.only!r} matches no run of {args.name} "
                         f"(runs: {', '.join(ids)})")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
