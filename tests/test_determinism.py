"""Determinism: the same seed gives bit-identical training on the CPU at a fixed thread count,
and seeded feedback is bit-identical between the CPU and the emulated CUDA kernels for every
dtype. Where results may legitimately differ (thread counts, GPUs) is in docs/validation.md."""

from __future__ import annotations

import contextlib

import pytest
import torch

from fastcredit import reference
from fastcredit.app import train

import backends


@contextlib.contextmanager
def _threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _train_steps(method: str, model: str, options: dict, steps: int = 4) -> dict:
    """A few optimizer steps of the CLI's network for ``method``, all randomness from seed 0;
    returns the final state (parameters and buffers)."""
    torch.manual_seed(0)
    config = train.TrainConfig(method=method, model=model, hidden=24, optimizer="sgd", lr=0.05,
                               method_options=options)
    net = train.build_model(config, (8, 8), 10)
    optimizer, _ = train._optimizer(config, net)  # (optimizer, LR schedule)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(33, 8, 8, generator=generator)
        y = torch.randint(0, 10, (33,), generator=generator)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return {k: v.clone() for k, v in net.state_dict().items()}


CONFIGS = [
    ("fa", "mlp", {}),
    ("fa", "mlp", {"feedback": "seeded"}),
    ("fa", "convnet", {}),
    ("usf", "mlp", {}),
    ("frsf", "mlp", {"feedback": "seeded"}),
    ("brsf", "convnet", {}),
    ("kp", "mlp", {}),
    ("dfa", "mlp", {}),
    ("dfa", "mlp", {"feedback": "stored"}),
    ("lra", "mlp", {}),
]


@pytest.mark.parametrize("method,model,options", CONFIGS,
                         ids=[f"{m}-{n}-{o.get('feedback', 'default')}" for m, n, o in CONFIGS])
@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_gives_bit_identical_training(method, model, options, threads):
    with _threads(threads):
        first = _train_steps(method, model, options)
        second = _train_steps(method, model, options)
        initial = _train_steps(method, model, options, steps=0)
    assert first.keys() == second.keys()
    for name, value in first.items():
        assert torch.equal(value, second[name]), name
    # the steps did train something
    assert any(not torch.equal(value, initial[name]) for name, value in first.items())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dist", reference.DISTS)
def test_seeded_feedback_is_bit_identical_on_cpu_and_emulated_cuda(dist, dtype):
    cpu, emulated = backends.get("cpu"), backends.get("cuda_emulated")
    # 37 x 70: odd sizes, rows beyond one Philox block, columns not a multiple of 4
    a = cpu.feedback_matrix(2**64 - 3, 37, 70, dist=dist, scale=0.7, dtype=dtype)
    b = emulated.feedback_matrix(2**64 - 3, 37, 70, dist=dist, scale=0.7, dtype=dtype)
    assert torch.equal(a, b)
    weight = torch.randn(9, 4, 5).to(dtype)
    for mode in ("seeded", "seeded_step"):
        kwargs = dict(seed=12345, step=2**40, dist=dist, scale=0.3)
        assert torch.equal(cpu.op("sign_feedback")(weight, mode, **kwargs),
                           emulated.op("sign_feedback")(weight, mode, **kwargs)), mode
