"""Checkpoints: state_dict() / load_state_dict() carry every piece of feedback state (seeds,
stored matrices, brSF's step counter, KP's B, LRA's E, DFA's seed and geometry), so resuming
from a checkpoint reproduces the following steps bit for bit."""

import io

import pytest
import torch
import torch.nn.functional as F
from resnet import TinyResNet
from torch import nn

import fastcredit

CASES = {
    "fa": {"method": "fa"},
    "fa_seeded": {"method": "fa", "feedback": "seeded"},
    "brsf": {"method": "brsf"},
    "kp": {"method": "kp"},
    "dfa": {"method": "dfa", "feedback": "stored"},
    "lra": {"method": "lra", "gamma": 0.5},
}


def _build(case: str, init_seed: int):
    """A converted model and its optimizer; ``init_seed`` changes every random draw (weights,
    feedback seeds, E), so a fresh build shares nothing with the saved one but its shape."""
    torch.manual_seed(init_seed)
    options = dict(CASES[case])
    method = options.pop("method")
    if method == "lra":
        model = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.Tanh(), nn.Linear(16, 5))
    else:
        model = TinyResNet(classes=5)
    model = fastcredit.convert(model, method, **options)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    if method == "kp":
        optimizer = fastcredit.optim.KolenPollack(optimizer, model)
    return model, optimizer


def _steps(model, optimizer, count, first):
    """Train ``count`` steps on batches ``first, first+1, ...``; the state after each step."""
    states = []
    for step in range(first, first + count):
        generator = torch.Generator().manual_seed(step)
        x = torch.randn(6, 3, 4, 4, generator=generator)
        y = torch.randint(0, 5, (6,), generator=generator)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return states


@pytest.mark.parametrize("case", list(CASES))
def test_resuming_from_a_checkpoint_reproduces_the_next_steps_bit_for_bit(case):
    model, optimizer = _build(case, init_seed=0)
    _steps(model, optimizer, 2, first=0)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    continued = _steps(model, optimizer, 3, first=2)

    fresh, fresh_optimizer = _build(case, init_seed=1)
    buffer.seek(0)
    checkpoint = torch.load(buffer)
    fresh.load_state_dict(checkpoint["model"])
    fresh_optimizer.load_state_dict(checkpoint["optimizer"])
    resumed = _steps(fresh, fresh_optimizer, 3, first=2)
    for want, got in zip(continued, resumed):
        assert want.keys() == got.keys()
        for key in want:
            assert torch.equal(want[key], got[key]), key


def test_state_dict_holds_the_feedback_state_of_each_method():
    keys = {case: set(_build(case, 0)[0].state_dict()) for case in CASES}
    assert {"conv1.feedback_seed", "conv1.feedback_weight"} <= keys["fa"]
    assert "conv1.feedback_weight" not in keys["fa_seeded"]
    assert {"conv1.feedback_seed", "conv1.feedback_step"} <= keys["brsf"]
    assert "fc.feedback_weight" in keys["kp"]
    assert {"fc.dfa_output.seed", "fc.dfa_output.point_features"} <= keys["dfa"]
    assert {"1.feedback", "3.feedback"} <= keys["lra"]
    model, _ = _build("dfa", 0)
    model(torch.randn(2, 3, 4, 4))  # the first forward creates the stored matrices
    assert {f"fc.dfa_output.feedback_{i}" for i in range(4)} <= set(model.state_dict())
