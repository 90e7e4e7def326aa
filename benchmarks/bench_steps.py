"""Training steps (zero_grad, forward, loss, backward) of every method next to plain PyTorch
backprop on the same network and batch: MLP 784-1024-1024-1024-10 (tanh) at batch 128 and
512, a small conv net and a LeNet at batch 128, and small models (784-256-256-10 at batch 64,
64-128-128-10 at batch 32, the conv net at batch 32; ``fastcredit.app.bench.WORKLOADS``), and
the same steps through BioTorch when it is installed (``pip install --no-deps biotorch``).

Run: python -m pytest benchmarks/bench_steps.py --benchmark-enable
"""

import pytest

from fastcredit.app import bench


@pytest.mark.parametrize("method", bench.METHODS)
def test_training_step(measure, workload, method):
    if not bench.supports(workload, method):
        pytest.skip(f"{method} has no {workload.model} network")
    measure(workload.name, method, bench.make_step(workload, method), baseline="bp")


@pytest.mark.parametrize("method", sorted(bench.BIOTORCH_MODES))
def test_biotorch_training_step(measure, workload, method):
    pytest.importorskip("biotorch")
    measure(workload.name, f"biotorch:{method}", bench.make_step(workload, method, "biotorch"),
            baseline="bp")
