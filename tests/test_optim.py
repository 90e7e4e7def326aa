"""fastcredit.optim: Kolen-Pollack feedback learning, Batch Manhattan and the weight-norm
constraint, with torch optimizers and schedulers."""

import copy

import pytest
import torch
import torch.nn.functional as F

from fastcredit import nn as fnn
from fastcredit.optim import BatchManhattan, KolenPollack, constrain_weight_norm

F64 = torch.float64


def _mlp(method, seed=0, **kwargs):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        fnn.Linear(6, 8, method=method, dtype=F64, **kwargs), torch.nn.Tanh(),
        fnn.Conv1d(1, 2, 3, padding=1, method=method, dtype=F64, **kwargs), torch.nn.Flatten(),
        torch.nn.Tanh(), fnn.Linear(16, 3, method=method, dtype=F64, **kwargs))


class _Unsqueeze(torch.nn.Module):
    def forward(self, x):
        return x.unsqueeze(1)


def _net(method, seed=0):
    model = _mlp(method, seed)
    model.insert(2, _Unsqueeze())  # [N, 8] -> [N, 1, 8] for the Conv1d
    return model


def _batch(step):
    generator = torch.Generator().manual_seed(step)
    return (torch.randn(7, 6, dtype=F64, generator=generator),
            torch.randint(0, 3, (7,), generator=generator))


def _step(model, opt, step):
    x, y = _batch(step)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def _kp_layers(model):
    return [m for m in model.modules() if isinstance(m, fnn.FeedbackLayer)]


def test_kp_with_b_equal_w_stays_equal_to_w_and_matches_backprop():
    kp, bp = _net("kp"), _net("bp")
    bp.load_state_dict(kp.state_dict(), strict=False)
    for layer in _kp_layers(kp):
        layer.set_feedback_(layer.weight)
    sgd = dict(lr=0.05, momentum=0.9, weight_decay=0.01)
    kp_opt = KolenPollack(torch.optim.SGD(kp.parameters(), **sgd), kp)
    bp_opt = torch.optim.SGD(bp.parameters(), **sgd)
    for step in range(20):
        _step(kp, kp_opt, step)
        _step(bp, bp_opt, step)
        for layer in _kp_layers(kp):
            assert torch.equal(layer.feedback_weight, layer.weight.detach()), step
    for (name, a), b in zip(kp.named_parameters(), bp.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    assert all(w.abs().sum() > 0 for w in kp.parameters())


def test_kp_feedback_gets_the_update_of_w_and_its_own_decay():
    # KP (plain SGD): W' = W - lr (g + wd W), B' = B - lr (g + wd B): W' - B' = (1 - lr wd)(W - B)
    model = _net("kp")
    lr, wd = 0.1, 0.2
    opt = KolenPollack(torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd), model)
    layers = _kp_layers(model)
    gaps = [(m.weight - m.feedback_weight).detach().clone() for m in layers]
    assert all(g.abs().max() > 0.01 for g in gaps)
    for step in range(5):
        before = [(m.weight.detach().clone(), m.feedback_weight.clone()) for m in layers]
        _step(model, opt, step)
        for m, (w, b) in zip(layers, before):
            grad = m.weight.grad
            torch.testing.assert_close(m.weight.detach(), w - lr * (grad + wd * w))
            torch.testing.assert_close(m.feedback_weight, b - lr * (grad + wd * b))
    for m, gap in zip(layers, gaps):
        torch.testing.assert_close(m.weight.detach() - m.feedback_weight, (1 - lr * wd) ** 5 * gap)
    assert [n for n, _ in model.named_parameters() if "feedback" in n] == []


def test_kp_follows_lr_schedule_and_param_groups():
    model = _net("kp")
    first, rest = model[0], [p for m in list(model)[1:] for p in m.parameters()]
    inner = torch.optim.Adam([{"params": first.parameters(), "lr": 0.01},
                              {"params": rest, "lr": 0.002}])
    opt = KolenPollack(inner, model)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for layer in _kp_layers(model):
        layer.set_feedback_(layer.weight)
    for step in range(4):
        _step(model, opt, step)
        scheduler.step()
        for layer in _kp_layers(model):
            assert torch.equal(layer.feedback_weight, layer.weight.detach())
    # the feedback optimizer took its last step with the rates of W's last step
    lrs = [g["lr"] for g in opt.feedback_optimizer.param_groups]
    assert lrs == [0.01 / 8, 0.002 / 8]


def test_kp_state_dict_resumes_bit_identically():
    model = _net("kp")
    opt = KolenPollack(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model)
    for step in range(3):
        _step(model, opt, step)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict()))
    for step in range(3, 6):
        _step(model, opt, step)
    resumed = _net("kp", seed=1)
    resumed.load_state_dict(saved[0])
    resumed_opt = KolenPollack(torch.optim.SGD(resumed.parameters(), lr=0.1, momentum=0.9),
                               resumed)
    resumed_opt.load_state_dict(saved[1])
    for step in range(3, 6):
        _step(resumed, resumed_opt, step)
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_kp_rejects_what_it_cannot_follow():
    with pytest.raises(ValueError, match="the model has no layer with method='kp'"):
        KolenPollack(torch.optim.SGD(_net("fa").parameters(), lr=0.1), _net("fa"))
    model = _net("kp")
    with pytest.raises(ValueError, match=r"does not update the weight of 2 kp layer\(s\)"):
        KolenPollack(torch.optim.SGD(model[0].parameters(), lr=0.1), model)
    with pytest.raises(TypeError, match="KolenPollack wraps a torch.optim.Optimizer, got list"):
        KolenPollack([], model)
    opt = KolenPollack(torch.optim.SGD(model.parameters(), lr=0.1), model)
    model[0].feedback_weight = model[0].feedback_weight.clone()  # what .to(device) does
    with pytest.raises(RuntimeError, match="feedback_weight buffer was replaced"):
        _step(model, opt, 0)


def test_batch_manhattan_steps_with_the_sign_of_each_gradient():
    model, twin = _net("fa"), _net("fa")
    opt = BatchManhattan(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5,
                                         weight_decay=0.1))
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.5, weight_decay=0.1)
    for step in range(3):
        _step(model, opt, step)
        x, y = _batch(step)
        twin_opt.zero_grad()
        F.cross_entropy(twin(x), y).backward()
        for p in twin.parameters():
            p.grad = torch.sign(p.grad)
        twin_opt.step()
        for a, b in zip(model.parameters(), twin.parameters()):
            assert torch.equal(a, b)
    assert {torch.unique(p.grad.abs()).tolist() == [1.0] for p in model.parameters()} == {True}
    # the wrapper copies like an optimizer (e.g. for checkpointing the whole object)
    clone_model, clone_opt = copy.deepcopy((model, opt))
    _step(clone_model, clone_opt, 3)
    _step(model, opt, 3)
    for a, b in zip(model.parameters(), clone_model.parameters()):
        assert torch.equal(a, b)


def test_batch_manhattan_with_closure_and_scheduler():
    model = _net("usf")
    opt = BatchManhattan(torch.optim.SGD(model.parameters(), lr=0.1))
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    x, y = _batch(0)
    before = [p.detach().clone() for p in model.parameters()]

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() > 0
    for p, b in zip(model.parameters(), before):
        torch.testing.assert_close(p.detach(), b - 0.1 * torch.sign(p.grad), rtol=0, atol=1e-15)
    scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)


def test_batch_manhattan_around_kp_gives_b_the_signed_gradient():
    for wrap in (lambda o, m: BatchManhattan(KolenPollack(o, m)),
                 lambda o, m: KolenPollack(BatchManhattan(o), m)):
        model = _net("kp")
        for layer in _kp_layers(model):
            layer.set_feedback_(layer.weight)
        opt = wrap(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), model)
        for step in range(3):
            _step(model, opt, step)
            for layer in _kp_layers(model):
                assert torch.equal(layer.feedback_weight, layer.weight.detach())


def test_constrain_weight_norm_restores_initial_norm_in_place():
    model = _net("frsf")
    layers = _kp_layers(model)
    initial = [torch.linalg.vector_norm(m.weight).item() for m in layers]
    weights = [m.weight for m in layers]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    opt.register_step_post_hook(lambda *_: constrain_weight_norm(model))
    for step in range(3):
        _step(model, opt, step)
    for m, w, norm in zip(layers, weights, initial):
        assert m.weight is w and isinstance(m.weight, torch.nn.Parameter)
        assert torch.linalg.vector_norm(m.weight).item() == pytest.approx(norm, rel=1e-14)
    assert {"weight_norm_init"} <= set(dict(layers[0].named_buffers()))
    # a zero weight stays zero rather than becoming NaN
    with torch.no_grad():
        layers[0].weight.zero_()
    constrain_weight_norm(model)
    assert torch.count_nonzero(layers[0].weight) == 0
    with pytest.raises(ValueError, match="the model has no fastcredit layer"):
        constrain_weight_norm(torch.nn.Linear(2, 2))


def test_record_weight_norm_after_manual_reinit():
    layer = fnn.Linear(5, 4, method="usf", dtype=F64)
    with torch.no_grad():
        layer.weight.mul_(3.0)
    layer.record_weight_norm_()
    with torch.no_grad():
        layer.weight.mul_(0.5)
    constrain_weight_norm(layer)
    assert layer.weight_norm_init.item() == pytest.approx(torch.linalg.vector_norm(
        layer.weight).item(), rel=1e-14)
