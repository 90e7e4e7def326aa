"""Training mechanics (issue #15): every method and DFA signal keeps its rule's gradients under
the things real training loops do: loss scaling, gradient accumulation, activation
checkpointing, abandoned forwards, reuse of a block, double backward, diagnostics between
steps, Kolen-Pollack with any torch optimizer. Values in float64 on tiny nets; the kernels run
on the C++ CPU ops and on the emulated CUDA kernels (tests/backends.py)."""

from __future__ import annotations

import contextlib

import backends
import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import fastcredit
from fastcredit import nn as fnn
from fastcredit.optim import KolenPollack

F64 = torch.float64
C = 3
# every method, DFA with each signal ("dfa-target" is DRTP, built by hand: convert has no labels;
# "dfa-head": the error at the head's input; "dfa-prenorm": pre-norm blocks, whose norms fold
# into the layer they feed)
CASES = ["bp", "fa", "usf", "frsf", "brsf", "kp", "dfa-error", "dfa-sign", "dfa-target",
         "dfa-head", "dfa-prenorm", "dfa-linear", "lra"]
RULES = [c for c in CASES if c != "bp"]
# the layer types added after the matrix: "<layer>-<FA-family method>" (the layer as the middle
# block of `Blocks`), and convert(conv_net, "lra")
LAYER_METHODS = ("fa", "brsf", "kp")
LAYER_CASES = [f"{layer}-{method}" for layer in ("mha", "lstm", "gru", "convT")
               for method in LAYER_METHODS] + ["lra-conv"]
KERNEL_BACKENDS = ["cpu", "cuda_emulated"]


def _kernels(name):
    return backends.emulated_kernels() if name == "cuda_emulated" else contextlib.nullcontext()


class DRTP(nn.Module):
    """A hand-built DFA MLP whose output takes the labels (signal="target")."""

    def __init__(self, signal="target"):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 6, dtype=F64), nn.Linear(6, 4, dtype=F64)
        self.head = nn.Linear(4, C, dtype=F64)
        self.p1, self.p2 = fnn.DFAPoint(), fnn.DFAPoint()
        self.dfa = fnn.DFAOutput([self.p1, self.p2], C, signal=signal, seed=5)

    def forward(self, x, y=None):
        h = self.p2(torch.tanh(self.fc2(self.p1(torch.tanh(self.fc1(x))))))
        return self.dfa(self.head(h), y) if self.dfa.signal == "target" else self.dfa(self.head(h))


class DFALinearNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = fnn.DFALinear(5, 6, "tanh", dtype=F64)
        self.l2 = fnn.DFALinear(6, 4, "relu", dtype=F64)
        self.head = nn.Linear(4, C, dtype=F64)
        self.dfa = fnn.DFAOutput([self.l1, self.l2], C, seed=5)

    def forward(self, x, y=None):
        return self.dfa(self.head(self.l2(self.l1(x))))


def _mlp():
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4), nn.Tanh(),
                         nn.Linear(4, C)).to(F64)


class PreNorm(nn.Module):
    """x + tanh(W LayerNorm(x)): a pre-norm residual block."""

    def __init__(self, width=6):
        super().__init__()
        self.norm, self.fc = nn.LayerNorm(width), nn.Linear(width, width)

    def forward(self, x):
        return x + torch.tanh(self.fc(self.norm(x)))


def _prenorm_net():
    """Two pre-norm blocks after a tanh layer: each starts after a point, so each folds."""
    net = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), PreNorm(), PreNorm(), nn.Linear(6, C)).to(F64)
    with torch.no_grad():
        for block in net[2:4]:
            block.norm.weight.add_(torch.randn(6, dtype=F64))
    return net


def _conv_net():
    """Two conv blocks (LRA folds each activation into its LRAConv2d) and a Linear output."""
    return nn.Sequential(nn.Unflatten(1, (1, 1, 5)), nn.Conv2d(1, 3, (1, 2)), nn.Tanh(),
                         nn.Conv2d(3, 2, (1, 2)), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6, C)).to(F64)


class Attention(nn.Module):
    """[N, 6] read as 3 tokens of width 2: causal self-attention, tanh."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(2, 2, batch_first=True)

    def forward(self, h):
        t = h.view(len(h), 3, 2)
        mask = nn.Transformer.generate_square_subsequent_mask(3, dtype=h.dtype)
        return torch.tanh(self.attn(t, t, t, attn_mask=mask, need_weights=False)[0]).flatten(1)


class Recurrent(nn.Module):
    """[N, 6] read as 3 steps of 2 features through a 2-layer RNN; its output sequence."""

    def __init__(self, cls):
        super().__init__()
        self.rnn = cls(2, 2, num_layers=2, batch_first=True)

    def forward(self, h):
        return self.rnn(h.view(len(h), 3, 2))[0].flatten(1)


class Conv(nn.Module):
    """[N, 6] read as a [3, 1, 2] map (ConvTranspose2d) or a [2, 1, 3] one (Conv2d), tanh."""

    def __init__(self, transposed):
        super().__init__()
        self.shape = (3, 1, 2) if transposed else (2, 1, 3)
        self.conv = (nn.ConvTranspose2d(3, 2, (1, 2)) if transposed  # -> [2, 1, 3]
                     else nn.Conv2d(2, 3, (1, 2)))  # -> [3, 1, 2]
        self.act = nn.Tanh()

    def forward(self, h):
        return self.act(self.conv(h.view(len(h), *self.shape))).flatten(1)


# a middle block of `Blocks`: [N, 6] -> [N, 6]
CORES = {
    "linear": lambda: nn.Sequential(nn.Linear(6, 6), nn.Tanh()),
    "mha": Attention,
    "lstm": lambda: Recurrent(nn.LSTM),
    "gru": lambda: Recurrent(nn.GRU),
    "convT": lambda: Conv(transposed=True),
    "conv": lambda: Conv(transposed=False),
    "prenorm": PreNorm,
}


def make(case):
    """(model, run) with run(x, y) -> logits, for one CASES entry; deterministic."""
    torch.manual_seed(0)
    if case == "dfa-target":
        model = DRTP()
    elif case == "dfa-linear":
        model = DFALinearNet()
    elif case == "lra":
        model = fnn.LRA([5, 6, 4, C], dtype=F64)
    elif case == "lra-conv":
        model = fastcredit.convert(_conv_net(), "lra")
    elif case.split("-")[0] in CORES:
        core, method = case.split("-")
        model = _blocks(method, None, core)
    elif case == "dfa-head":
        model = fastcredit.convert(_mlp(), "dfa", error_at="head_input", seed=5)
    elif case == "dfa-prenorm":
        model = fastcredit.convert(_prenorm_net(), "dfa", seed=5)
    elif case.startswith("dfa"):
        model = fastcredit.convert(_mlp(), "dfa", signal=case[4:], seed=5)
    else:
        options = {} if case in ("usf", "bp") else {"seed": 7}
        model = fastcredit.convert(_mlp(), case, **options)
    if case.endswith("kp"):
        for layer in model.modules():
            if isinstance(layer, fnn.FeedbackLayer):
                layer.set_feedback_(torch.randn_like(layer.weight))
    if case == "dfa-target":
        return model, lambda x, y: model(x, y)
    return model, lambda x, y: model(x)


def batch(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=F64), torch.randint(0, C, (n,), generator=g)


def grads(model, run, pieces, factor=1.0):
    """Gradients after one backward per (x, y) piece of `loss * factor`, divided by factor."""
    model.zero_grad(set_to_none=True)
    for x, y in pieces:
        (F.cross_entropy(run(x, y), y) * factor).backward()
    return {n: p.grad / factor for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b, rtol=1e-6):
    assert a.keys() == b.keys() and a
    for name in a:
        scale = b[name].norm().clamp_min(1e-12)
        assert (a[name] - b[name]).norm() / scale < rtol, (name, a[name], b[name])


# ---- 1, 2, 3: loss scaling and accumulation --------------------------------------------------
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("case", CASES + LAYER_CASES)
def test_scaled_loss_scales_every_gradient_by_the_same_factor(case, backend):
    model, run = make(case)
    x, y = batch()
    with _kernels(backend):
        plain = grads(model, run, [(x, y)])
        for factor in (2.0 ** 16, 0.25):  # GradScaler's initial scale; loss / 4
            assert_same(grads(model, run, [(x, y)], factor), plain)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("case", CASES + LAYER_CASES)
def test_two_half_batches_of_half_the_loss_equal_one_batch(case, backend):
    # brSF draws once per update, so both halves use the draw the whole batch uses
    model, run = make(case)
    x, y = batch()
    with _kernels(backend):
        whole = grads(model, run, [(x, y)])
        halves = grads(model, run, zip(x.chunk(2), y.chunk(2)), 0.5)
    assert_same({name: g * 0.5 for name, g in halves.items()}, whole)


@pytest.mark.parametrize("case", ["dfa-sign", "dfa-target", "lra"])
def test_grad_scaler_under_autocast_gives_the_unscaled_gradients(case):
    # the case: mixed precision with GradScaler (bfloat16 autocast on the CPU)
    model, run = make(case)
    model.float()
    x, y = batch(32)
    x = x.float()

    def step(scaler):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(run(x, y).float(), y)
        scaler.scale(loss).backward() if scaler else loss.backward()
        if scaler:
            scaler.unscale_(torch.optim.SGD(model.parameters(), lr=0))
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    scaled, plain = step(torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)), step(None)
    assert_same(scaled, plain, 2e-2)  # bfloat16 rounding of k; was 2^-16 or 99.9 % off


def test_sign_and_target_signals_keep_the_published_size_for_a_mean_loss():
    # k recovered from e is 1/rows for a mean cross-entropy: s = sign(e)/N and -onehot/N
    for signal in ("sign", "target"):
        model = DRTP(signal)
        x, y = batch()
        logits = model(x, y)
        e = (torch.softmax(logits, 1) - F.one_hot(y, C)).detach() / len(y)
        s = torch.sign(e) / len(y) if signal == "sign" else -F.one_hot(y, C).to(F64) / len(y)
        h1 = torch.tanh(model.fc1(x)).detach()
        h2 = torch.tanh(model.fc2(h1)).detach()
        F.cross_entropy(logits, y).backward()
        delta = (s @ model.p2.feedback_matrix(dtype=F64)) * (1 - h2 ** 2)
        torch.testing.assert_close(model.fc2.weight.grad, delta.T @ h1, rtol=1e-10,
                                   atol=1e-14)


# ---- 9: compiled training -------------------------------------------------------------------
# (the layers' kp cases are left out: under plain SGD, kp's B is a stored buffer as fa's)
@pytest.mark.parametrize("case", ["dfa-error", "dfa-sign", "dfa-target", "dfa-head",
                                  "dfa-prenorm", "dfa-linear", "lra",
                                  *(c for c in LAYER_CASES if not c.endswith("kp"))])
def test_compiled_training_equals_eager_over_five_steps_without_recompiling(case):
    factor = 2.0 ** 10  # a scaled loss, unscaled before the step as GradScaler does
    torch._dynamo.reset()
    (eager, eager_run), (model, _) = make(case), make(case)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter)
    runs = (eager_run, (lambda x, y: compiled(x, y)) if case == "dfa-target"
            else (lambda x, y: compiled(x)))
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (eager, model)]
    for step in range(5):
        x, y = batch(seed=step)
        for run, opt in zip(runs, optimizers):
            opt.zero_grad()
            (F.cross_entropy(run(x, y), y) * factor).backward()
            for p in opt.param_groups[0]["params"]:  # what GradScaler's unscale does
                if p.grad is not None:
                    p.grad /= factor
            opt.step()
        for a, b in zip(eager.parameters(), model.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
        if step == 0:
            frames = counter.frame_count
    assert counter.frame_count == frames > 0  # nothing recompiled after the first step


# ---- 4: checkpointing, abandoned forwards, reuse ----------------------------------------------
class Blocks(nn.Module):
    """A net whose middle block (one of CORES) may run under torch.utils.checkpoint."""

    def __init__(self, mode=None, core="linear"):
        super().__init__()
        self.mode = mode
        self.a = nn.Sequential(nn.Linear(5, 6), nn.Tanh())
        self.b = CORES[core]()
        self.head = nn.Linear(6, C)

    def forward(self, x):
        h = self.a(x)
        if self.mode is None:
            h = self.b(h)
        else:
            h = checkpoint(self.b, h, use_reentrant=self.mode == "reentrant")
        return self.head(h)


def _blocks(method, mode, core="linear"):
    torch.manual_seed(0)
    model = Blocks(mode, core).to(F64)
    options = {} if method in ("bp", "lra") else {"seed": 5}
    return fastcredit.convert(model, method, **options)


@pytest.mark.parametrize("early_stop", [True, False])
@pytest.mark.parametrize("method,core", [
    *((m, "linear") for m in ("bp", "fa", "brsf", "kp", "dfa")), ("dfa", "prenorm"),
    *((m, c) for c, m in (case.split("-") for case in LAYER_CASES if case != "lra-conv")),
    ("lra", "conv")])
def test_non_reentrant_checkpoint_equals_plain_over_steps(method, core, early_stop):
    x, y = batch()
    plain, ckpt = _blocks(method, None, core), _blocks(method, "non_reentrant", core)
    with torch.utils.checkpoint.set_checkpoint_early_stop(early_stop):
        for _ in range(2):  # without early stop the second step used to fail ("ran twice")
            g_plain = grads(plain, lambda x, y: plain(x), [(x, y)])
            g_ckpt = grads(ckpt, lambda x, y: ckpt(x), [(x, y)])
            assert_same(g_ckpt, g_plain, 1e-12)


@pytest.mark.parametrize("method", ["bp", "fa", "brsf", "kp"])
def test_reentrant_checkpoint_equals_plain_where_the_input_carries_a_gradient(method):
    x, y = batch()
    plain, ckpt = _blocks(method, None), _blocks(method, "reentrant")
    assert_same(grads(ckpt, lambda x, y: ckpt(x), [(x, y)]),
                grads(plain, lambda x, y: plain(x), [(x, y)]), 1e-12)


def test_reentrant_checkpoint_of_a_dfa_block_is_a_clear_error():
    # the block's input is the previous point's detached output: torch never re-runs it
    x, y = batch()
    with pytest.raises(RuntimeError, match="reentrant torch.utils.checkpoint"):
        _blocks("dfa", "reentrant")(x)
    plain, resumed = _blocks("dfa", None), _blocks("dfa", "reentrant")
    F.cross_entropy(plain(x), y).backward()
    resumed.load_state_dict(plain.state_dict())  # geometry known: still an error
    with pytest.raises(RuntimeError, match="reentrant torch.utils.checkpoint"):
        resumed(x)
    resumed.eval()
    with torch.no_grad():  # inference through the checkpoint is fine
        torch.testing.assert_close(resumed(x), plain(x))


def _step_grads(model, run, x, y):
    return grads(model, run, [(x, y)])


@pytest.mark.parametrize("case", ["dfa-error", "dfa-sign", "dfa-target", "dfa-linear", "lra",
                                  "brsf"])
def test_an_abandoned_forward_changes_nothing_after_it(case):
    x, y = batch()
    reference_model, reference_run = make(case)
    expected = _step_grads(reference_model, reference_run, x, y)
    model, run = make(case)
    probe_x, probe_y = batch(4, seed=9)
    children = list(model.children())
    with torch.enable_grad():  # a feature probe with gradients on, never backpropagated
        if case.startswith("dfa-") and case[4:] in ("error", "sign"):
            model[:2](probe_x)
        else:
            run(probe_x, probe_y)  # a whole forward whose loss is dropped
    if case == "dfa-error":  # and an exception between the points and the head
        head = model[4]
        with pytest.raises(RuntimeError, match="boom"):
            hook = head.register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(
                RuntimeError("boom")))
            try:
                run(probe_x, probe_y)
            finally:
                hook.remove()
    assert children == list(model.children())
    for _ in range(2):
        assert_same(_step_grads(model, run, x, y), expected, 1e-12)


def test_hand_placed_points_drop_an_abandoned_forward():
    model, run = make("dfa-target")
    x, y = batch()
    expected = _step_grads(*make("dfa-target"), x, y)
    model.p1(torch.tanh(model.fc1(batch(4, seed=9)[0])))  # probe of the first block only
    assert_same(_step_grads(model, run, x, y), expected, 1e-12)


def _hand_reuse_grads(block, head, point, x, y):
    """A block applied twice, each run fed e B at its output; the head's true gradient."""
    with fnn.backprop():  # the points pass the graph through: plain autograd below
        h1 = block(x)
        h2 = block(h1.detach())
        logits = head(h2.detach())
    loss = F.cross_entropy(logits, y)
    (e,) = torch.autograd.grad(loss, logits, retain_graph=True)
    s = e @ point.feedback_matrix(dtype=F64)
    params = list(block.parameters())
    block_grads = torch.autograd.grad([h1, h2], params, [s, s])
    head_grads = torch.autograd.grad(loss, list(head.parameters()))
    return [*block_grads, *head_grads]


def test_a_converted_block_run_twice_in_a_forward_gets_feedback_at_every_run():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
            self.head = nn.Linear(3, C)

        def forward(self, x):
            return self.head(self.block(self.block(x)))

    torch.manual_seed(0)
    model = fastcredit.convert(Tied().to(F64), "dfa", seed=5)
    x, y = torch.randn(6, 3, dtype=F64), torch.randint(0, C, (6,))
    F.cross_entropy(model(x), y).backward()
    got = [p.grad for p in [*model.block.parameters(), *model.head.parameters()]]
    expected = _hand_reuse_grads(model.block, model.head, model.block[1].dfa_point, x, y)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_a_hand_placed_point_with_reuse_gets_feedback_at_every_use():
    torch.manual_seed(0)
    linear, head = nn.Linear(3, 3, dtype=F64), nn.Linear(3, C, dtype=F64)
    point = fnn.DFAPoint(reuse=True)
    dfa = fnn.DFAOutput([point], C, seed=5)
    x, y = torch.randn(6, 3, dtype=F64), torch.randint(0, C, (6,))

    def block(h):
        return point(torch.tanh(linear(h)))

    F.cross_entropy(dfa(head(block(block(x)))), y).backward()
    got = [p.grad for p in [*linear.parameters(), *head.parameters()]]
    plain = nn.Sequential(linear, nn.Tanh())
    expected = _hand_reuse_grads(plain, head, point, x, y)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# ---- 5: double backward --------------------------------------------------------------------
@pytest.mark.parametrize("case", [*RULES, "lra-conv"])
def test_double_backward_through_a_learning_rule_is_a_clear_error(case):
    model, run = make(case)
    x, y = batch()
    expected = grads(model, run, [(x, y)])
    params = [p for n, p in model.named_parameters() if n in expected]
    first = torch.autograd.grad(F.cross_entropy(run(x, y), y), params, create_graph=True)
    for (name, want), got in zip(expected.items(), first):  # first order still the rule's
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14, msg=name)
    penalty = sum(g.pow(2).sum() for g in first if g.requires_grad)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        penalty.backward()


def test_double_backward_of_backprop_matches_finite_differences():
    model, run = make("bp")
    x, y = batch()
    weight = model[0].weight

    def penalty():
        (g,) = torch.autograd.grad(F.cross_entropy(run(x, y), y), [weight], create_graph=True)
        return g.pow(2).sum()

    (analytic,) = torch.autograd.grad(penalty(), [weight])
    eps, index = 1e-6, (1, 2)
    with torch.no_grad():
        weight[index] += eps
    up = penalty().item()
    with torch.no_grad():
        weight[index] -= 2 * eps
    down = penalty().item()
    assert abs(analytic[index].item() - (up - down) / (2 * eps)) < 1e-6


# ---- 6: diagnostics ------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["brsf", "dfa", "lra"])
def test_alignment_leaves_the_model_and_the_random_state_as_they_were(method):
    torch.manual_seed(0)
    if method == "lra":
        model = fnn.LRA([5, 6, 4, C], dtype=F64)
    else:
        model = fastcredit.convert(nn.Sequential(
            nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.2), nn.Linear(6, C)
        ).to(F64), method, seed=5)
    x, y = batch()
    F.cross_entropy(model(x), y).backward()  # some .grad to keep
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads_before = {n: p.grad.clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    fastcredit.diagnostics.alignment(model, x, y)
    after = model.state_dict()
    assert state.keys() == after.keys()
    for key, value in state.items():
        assert torch.equal(after[key], value), key
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, grads_before[name]), name
    assert torch.equal(torch.get_rng_state(), rng)


# ---- 7: Kolen-Pollack with every torch optimizer --------------------------------------------
OPTIMIZERS = {
    "SGD": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    "Adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "AdamW": lambda p: torch.optim.AdamW(p, lr=0.01),
    "Adamax": lambda p: torch.optim.Adamax(p, lr=0.01),
    "NAdam": lambda p: torch.optim.NAdam(p, lr=0.01),
    "RAdam": lambda p: torch.optim.RAdam(p, lr=0.01),
    "Adagrad": lambda p: torch.optim.Adagrad(p, lr=0.01),
    "Adadelta": lambda p: torch.optim.Adadelta(p),
    "RMSprop": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5),
    "Rprop": lambda p: torch.optim.Rprop(p, lr=0.01),
    "ASGD": lambda p: torch.optim.ASGD(p, lr=0.01),
    "Adafactor": lambda p: torch.optim.Adafactor(p, lr=0.01),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_kolen_pollack_follows_w_with_every_optimizer_and_a_schedule(name):
    torch.manual_seed(0)
    model = fastcredit.convert(_mlp(), "kp", seed=7)
    layers = [m for m in model.modules() if isinstance(m, fnn.FeedbackLayer)]
    for layer in layers:  # B = W: KP's B then takes exactly W's updates
        layer.set_feedback_(layer.weight)
    opt = KolenPollack(OPTIMIZERS[name](model.parameters()), model)
    schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    start = [layer.weight.detach().clone() for layer in layers]
    for step in range(3):
        x, y = batch(seed=step)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        schedule.step()
    for layer, w0 in zip(layers, start):
        assert not torch.equal(layer.weight, w0)
        assert torch.equal(layer.feedback_weight, layer.weight.detach())


def test_kolen_pollack_refuses_lbfgs_by_name():
    model = fastcredit.convert(_mlp(), "kp", seed=7)
    with pytest.raises(TypeError, match="LBFGS"):
        KolenPollack(torch.optim.LBFGS(model.parameters()), model)


# ---- 8: spatially shared DFA feedback on a CNN with a hidden fully connected layer -----------
def test_spatially_shared_feedback_falls_back_to_dense_on_plain_features():
    def cnn():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 16, 6),
                             nn.Tanh(), nn.Linear(6, C)).to(F64)

    shared = fastcredit.convert(cnn(), "dfa", spatial="shared", seed=5)
    dense = fastcredit.convert(cnn(), "dfa", seed=5)
    x, y = torch.randn(4, 1, 6, 6, dtype=F64), torch.randint(0, C, (4,))
    g_shared, g_dense = (grads(m, lambda x, y, m=m: m(x), [(x, y)]) for m in (shared, dense))
    assert shared[1].dfa_point.features == 2  # the conv point: one column per channel
    for name in ("3.weight", "3.bias", "5.weight"):  # the hidden FC point is fed densely
        torch.testing.assert_close(g_shared[name], g_dense[name], rtol=1e-12, atol=1e-14)
    assert not torch.allclose(g_shared["0.weight"], g_dense["0.weight"])
