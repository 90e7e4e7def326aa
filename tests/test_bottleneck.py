"""fastcredit.nn.Bottleneck: a layer restricted to a fixed fraction of its trainable entries."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastcredit.nn import Bottleneck, DFALinear, DFAOutput


def test_forward_is_the_wrapped_layers():
    layer = nn.Linear(7, 5)
    x = torch.randn(3, 7)
    assert torch.equal(Bottleneck(layer, 0.1)(x), layer(x))


@pytest.mark.parametrize("fraction", [1 / 800, 0.1, 0.5, 1.0])
def test_only_the_kept_fraction_of_each_parameter_gets_gradient(fraction):
    torch.manual_seed(0)
    layer = nn.Linear(40, 20)
    restricted = Bottleneck(layer, fraction, seed=3)
    x = torch.randn(6, 40)
    (want_w, want_b) = torch.autograd.grad(layer(x).square().sum(), [layer.weight, layer.bias])
    restricted(x).square().sum().backward()
    for name, want in (("weight", want_w), ("bias", want_b)):
        mask = getattr(restricted, f"mask_{name}")
        grad = getattr(layer, name).grad
        assert int(mask.sum()) == max(1, round(fraction * mask.numel()))
        assert torch.equal(grad, want * mask)  # kept entries exact, the others exactly zero
    assert restricted.trainable_entries() == {
        "weight": max(1, round(fraction * 800)), "bias": max(1, round(fraction * 20))}


def test_optimizer_moves_only_kept_entries_and_masks_round_trip():
    torch.manual_seed(1)
    restricted = Bottleneck(nn.Linear(30, 10), 0.2, seed=4)
    before = restricted.module.weight.detach().clone()
    opt = torch.optim.Adam(restricted.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        restricted(torch.randn(8, 30)).square().sum().backward()
        opt.step()
    moved = restricted.module.weight.detach() != before
    assert torch.equal(moved, restricted.mask_weight)

    other = Bottleneck(nn.Linear(30, 10), 0.2, seed=99)
    assert not torch.equal(other.mask_weight, restricted.mask_weight)
    other.load_state_dict(restricted.state_dict())
    assert torch.equal(other.mask_weight, restricted.mask_weight)


def test_restricts_a_dfa_block():
    torch.manual_seed(2)
    block = DFALinear(6, 12)
    restricted = Bottleneck(block, 0.25)
    head = nn.Linear(12, 4)
    dfa = DFAOutput([block], 4)
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0])

    F.cross_entropy(dfa(head(block(x))), y).backward()
    free = block.weight.grad.clone()
    block.weight.grad = None
    F.cross_entropy(dfa(head(restricted(x))), y).backward()
    assert torch.equal(block.weight.grad, free * restricted.mask_weight)


def test_rejects_a_fraction_outside_0_1():
    for fraction in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction must be in \\(0, 1\\]"):
            Bottleneck(nn.Linear(2, 2), fraction)
