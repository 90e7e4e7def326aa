"""One training step (forward + backward) of a DFA MLP vs. backprop and vs. the way public DFA
code does it.

Run: python -m pytest benchmarks/bench_dfa.py --benchmark-enable --benchmark-group-by=param
Compare the rows within one run (ratios); absolute times depend on the machine.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastcredit.nn import DFALinear, DFAOutput, dfa_points

# Launay 2019's FC net on CIFAR-10 sizes, and a wider one.
SHAPES = [(128, 3072, 800, 3), (128, 1024, 2048, 3)]


@pytest.fixture(params=SHAPES, ids=lambda s: "x".join(map(str, s)))
def problem(request):
    batch, d_in, width, hidden = request.param
    torch.manual_seed(0)
    return torch.randn(batch, d_in), torch.randint(0, 10, (batch,)), d_in, width, hidden


def _step(model, x, y):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def test_backprop(benchmark, problem):
    """Baseline: the same MLP trained by backprop."""
    x, y, d_in, width, hidden = problem
    layers = [m for i in range(hidden) for m in (nn.Linear(d_in if i == 0 else width, width),
                                                  nn.Tanh())]
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    benchmark(_step, model, x, y)


@pytest.mark.parametrize("feedback", ["seeded", "stored", "shared"])
def test_fastcredit_dfa(benchmark, problem, feedback):
    """DFALinear blocks + DFAOutput: one backward, no input gradients, fused epilogue."""
    x, y, d_in, width, hidden = problem
    blocks = nn.Sequential(*[DFALinear(d_in if i == 0 else width, width) for i in range(hidden)])
    model = nn.Sequential(blocks, nn.Linear(width, 10),
                          DFAOutput(dfa_points(blocks), 10, feedback=feedback))
    benchmark(_step, model, x, y)


def test_nested_backward_dfa(benchmark, problem):
    """What public DFA code does (TinyDFA-style): stored matrix, detach + requires_grad at
    every point (so input gradients are still computed), then one extra backward call per
    point from the output's backward."""
    x, y, d_in, width, hidden = problem
    linears = [nn.Linear(d_in if i == 0 else width, width) for i in range(hidden)]
    head = nn.Linear(width, 10)
    b = torch.rand(10, width) * 2 - 1
    points = []

    class Output(torch.autograd.Function):
        @staticmethod
        def forward(ctx, out):
            return out.view_as(out)

        @staticmethod
        def backward(ctx, grad):
            projection = grad @ b / width**0.5
            for point in points:
                point.backward(projection[:, : point.shape[1]])
            return grad

    def model(t):
        points.clear()
        for linear in linears:
            h = torch.tanh(linear(t))
            points.append(h)
            t = h.detach().requires_grad_()
        return Output.apply(head(t))

    def step(x, y):
        for module in [*linears, head]:
            module.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    benchmark(step, x, y)
