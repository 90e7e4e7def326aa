"""Seeded projection vs. the ways a user would otherwise get x @ B.

Run: python -m pytest benchmarks/bench_projection.py --benchmark-enable --benchmark-group-by=param
Compare the rows within one run (ratios); absolute times depend on the machine.
"""

import pytest
import torch

import fastcredit

# DFA-like shapes: output error [batch, classes] projected to a hidden width, and a wide layer.
SHAPES = [(128, 10, 1024), (128, 1024, 1024)]


@pytest.fixture(params=SHAPES, ids=lambda s: "x".join(map(str, s)))
def problem(request):
    n, k, cols = request.param
    return torch.randn(n, k), cols


def test_stored_matrix_matmul(benchmark, problem):
    """Baseline: B kept in memory (what BioTorch/TinyDFA do), one GEMM per call."""
    x, cols = problem
    b = fastcredit.feedback_matrix(1, x.shape[1], cols)
    benchmark(torch.matmul, x, b)


def test_seeded_project(benchmark, problem):
    """B regenerated tile by tile: 8 bytes of state instead of K * cols * 4."""
    x, cols = problem
    benchmark(fastcredit.seeded_project, x, 1, cols)


def test_materialise_then_matmul(benchmark, problem):
    """Regenerating the whole B each call, then one GEMM."""
    x, cols = problem
    benchmark(lambda: x @ fastcredit.feedback_matrix(1, x.shape[1], cols))
