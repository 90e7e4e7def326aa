"""Fixed cost per converted layer and step, in thread CPU time: the 64-128-128-10 tanh MLP at
batch 32 (issue #22's "fixed overhead" workload), converted by each method with
``fastcredit.convert`` beside the plain torch net, one full SGD step each (zero_grad,
forward, cross-entropy, backward, optimizer step), interleaved in rounds; median over rounds
of each round's mean step. Reported: us per step, ratio to the plain net and
(step - plain step) / 3 weight layers. Thread CPU time is less disturbed than wall time by
other processes on a shared machine. Run it on two checkouts to compare them:
``PYTHONPATH=<checkout> python benchmarks/step_overhead.py``.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import fastcredit

METHODS = ("fa", "usf", "frsf", "brsf", "kp", "dfa", "lra")


def _net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128),
                         nn.Tanh(), nn.Linear(128, 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    models = {"bp": _net(), **{m: fastcredit.convert(_net(), m) for m in args.methods}}
    optimizers = {k: torch.optim.SGD(v.parameters(), lr=1e-3) for k, v in models.items()}

    def step(name: str) -> None:
        optimizers[name].zero_grad(set_to_none=True)
        F.cross_entropy(models[name](x), y).backward()
        optimizers[name].step()

    samples: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name in models:
            for _ in range(20):  # warm caches after the other methods ran
                step(name)
            start = time.thread_time()
            for _ in range(args.steps):
                step(name)
            samples[name].append((time.thread_time() - start) / args.steps * 1e6)
    bp = statistics.median(samples["bp"])
    print(f"fastcredit {fastcredit.__version__} from {fastcredit.__file__}")
    print(f"{'method':<6} {'us/step':>8} {'/ bp':>6} {'us/layer over bp':>17}")
    print(f"{'bp':<6} {bp:>8.0f} {1:>6.3f} {0:>17.1f}")
    for name in args.methods:
        us = statistics.median(samples[name])
        print(f"{name:<6} {us:>8.0f} {us / bp:>6.3f} {(us - bp) / 3:>17.1f}")


if __name__ == "__main__":
    main()
