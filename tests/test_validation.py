"""Bad input at every public entry point fails loudly: each case asserts the exception type and
its message (docs/validation.md lists them). Also what must work: zero-size inputs give
correctly shaped results, overlapping read-only inputs are read correctly, and the ops
propagate NaN/Inf exactly as their pure-PyTorch references do."""

from __future__ import annotations

import math
import re

import pytest
import torch

import fastcredit
from fastcredit import diagnostics, optim, reference
from fastcredit.app import cli, data
from fastcredit import nn as fnn

import backends

NATIVE = ["cpu", "cuda_emulated"]
CPU_ONLY = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
X = torch.zeros(3, 4)
META = X.to("meta")
NAN, INF = float("nan"), float("inf")


def _op(backend, name):
    return backend.op(name)


def _kernel(backend, name):
    """The registered kernel itself, bypassing the Python wrapper's checks."""
    return getattr(backend.library(), name)


def _cpu_kernel(backend, name):
    """The CPU kernel called directly, so a meta argument reaches its C++ device check
    instead of dispatching to the fake impl (the only way to mix devices without a GPU)."""
    overload = getattr(backend.library(), name).default
    return lambda *args: overload.redispatch(CPU_ONLY, *args)


# (id, call(backend), exception, message regex). Each is run on the CPU kernels and on the
# emulated CUDA kernels: both go through csrc/checks.h.
OP_CASES = [
    # feedback_fill_ / feedback_matrix
    ("fill-rank", lambda b: _op(b, "feedback_fill_")(torch.empty(3), 1), RuntimeError,
     r"feedback_fill_: out must be 2-D \[rows, cols\], got 1-D tensor of shape \[3\]"),
    ("fill-dtype", lambda b: _op(b, "feedback_fill_")(torch.empty(2, 3, dtype=torch.int32), 1),
     RuntimeError, "feedback_fill_: out must be float32, float64, float16 or bfloat16, got Int"),
    ("fill-expanded-out", lambda b: _op(b, "feedback_fill_")(torch.empty(1, 4).expand(3, 4), 1),
     RuntimeError, r"out must not overlap itself, got shape \[3, 4\] with strides \[0, 1\]"),
    ("fill-overlapping-out",
     lambda b: _op(b, "feedback_fill_")(torch.empty(8).as_strided((3, 4), (1, 1)), 1),
     RuntimeError, r"out must not overlap itself, got shape \[3, 4\] with strides \[1, 1\]"),
    ("fill-dist", lambda b: _op(b, "feedback_fill_")(torch.empty(2, 2), 1, dist="gauss"),
     ValueError, r"unknown dist 'gauss'; expected one of \('uniform', 'normal', 'rademacher', "
     r"'uniform32', 'normal32'\)"),
    ("fill-dist-kernel",
     lambda b: _kernel(b, "feedback_fill_")(torch.empty(2, 2), 1, "gauss", 1.0), RuntimeError,
     "unknown dist 'gauss'; expected one of 'uniform', 'normal', 'rademacher', 'uniform32', "
     "'normal32'"),
    ("fill-scale-float32",
     lambda b: _op(b, "feedback_fill_")(torch.empty(2, 2), 1, dist="normal32", scale=1e39),
     RuntimeError, "feedback_fill_: scale must be within float32's range for dist 'normal32', "
     r"got 1e\+39"),
    ("fill-scale", lambda b: _op(b, "feedback_fill_")(torch.empty(2, 2), 1, scale=NAN),
     RuntimeError, "feedback_fill_: scale must be finite, got nan"),
    ("fill-seed-negative", lambda b: _op(b, "feedback_fill_")(torch.empty(2, 2), -1),
     ValueError, r"seed must satisfy 0 <= seed < 2\*\*64, got -1"),
    ("fill-seed-too-big", lambda b: _op(b, "feedback_fill_")(torch.empty(2, 2), 2**64),
     ValueError, r"seed must satisfy 0 <= seed < 2\*\*64, got 18446744073709551616"),
    ("fill-seed-type", lambda b: _op(b, "feedback_fill_")(torch.empty(2, 2), 1.5), TypeError,
     "seed must be an int, got float"),
    ("matrix-rows-negative", lambda b: fastcredit.feedback_matrix(1, -1, 3), ValueError,
     "rows must be non-negative, got -1"),
    ("matrix-rows-too-big", lambda b: fastcredit.feedback_matrix(1, 2**63, 1), ValueError,
     r"rows must be < 2\*\*63, got 9223372036854775808"),
    ("matrix-cols-type", lambda b: fastcredit.feedback_matrix(1, 2, 3.0), TypeError,
     "cols must be an int, got float"),
    ("matrix-dtype", lambda b: fastcredit.feedback_matrix(1, 2, 3, dtype=torch.int64),
     RuntimeError, "out must be float32, float64, float16 or bfloat16, got Long"),
    # seeded_project
    ("project-rank", lambda b: _op(b, "seeded_project")(torch.zeros(3), 1, 2), RuntimeError,
     r"seeded_project: x must be 2-D \[N, K\], got 1-D tensor of shape \[3\]"),
    ("project-dtype", lambda b: _op(b, "seeded_project")(X.long(), 1, 2), RuntimeError,
     "seeded_project: x must be float32, float64, float16 or bfloat16, got Long"),
    ("project-cols", lambda b: _op(b, "seeded_project")(X, 1, -2), ValueError,
     "cols must be non-negative, got -2"),
    ("project-cols-kernel",
     lambda b: _kernel(b, "seeded_project")(X, 1, -2, "uniform", 1.0, False), RuntimeError,
     "seeded_project: cols must be non-negative, got -2"),
    ("project-scale", lambda b: _op(b, "seeded_project")(X, 1, 2, scale=INF), RuntimeError,
     "seeded_project: scale must be finite, got inf"),
    ("project-dist", lambda b: _op(b, "seeded_project")(X, 1, 2, dist="x"), ValueError,
     "unknown dist 'x'"),
    ("project-seed", lambda b: _op(b, "seeded_project")(X, -5, 2), ValueError,
     r"seed must satisfy 0 <= seed < 2\*\*64, got -5"),
    # lra_error
    ("lra-shape", lambda b: _op(b, "lra_error")(X, torch.zeros(3, 5), 0.1), RuntimeError,
     r"lra_error: pre_activation and displacement must have the same shape, got \[3, 4\] and "
     r"\[3, 5\]"),
    ("lra-dtype", lambda b: _op(b, "lra_error")(X, X.double(), 0.1), RuntimeError,
     "pre_activation and displacement must have the same dtype, got Float and Double"),
    ("lra-dtype-int", lambda b: _op(b, "lra_error")(X.int(), X.int(), 0.1), RuntimeError,
     "pre_activation must be float32, float64, float16 or bfloat16, got Int"),
    ("lra-device-meta", lambda b: _op(b, "lra_error")(X, META, 0.1), RuntimeError,
     "pre_activation and displacement must be on the same device, got cpu and meta"),
    ("lra-device-kernel",
     lambda b: _cpu_kernel(b, "lra_error")(X, META, 0.1, "tanh", "gaussian", False, 0.01),
     RuntimeError, "pre_activation and displacement must be on the same device, got cpu and meta"),
    ("lra-activation", lambda b: _op(b, "lra_error")(X, X, 0.1, "swish"), ValueError,
     "unknown activation 'swish'; expected one of"),
    ("lra-activation-kernel",
     lambda b: _kernel(b, "lra_error")(X, X, 0.1, "swish", "gaussian", False, 0.01),
     RuntimeError, "unknown activation 'swish'; expected one of 'identity', 'tanh'"),
    ("lra-error", lambda b: _op(b, "lra_error")(X, X, 0.1, "tanh", "huber"), ValueError,
     r"unknown error 'huber'; expected one of \('gaussian', 'cauchy'\)"),
    ("lra-error-kernel",
     lambda b: _kernel(b, "lra_error")(X, X, 0.1, "tanh", "huber", False, 0.01), RuntimeError,
     "lra_error: unknown error 'huber'; expected 'gaussian' or 'cauchy'"),
    ("lra-surrogate", lambda b: _op(b, "lra_error")(X, X, 0.1, "sign", surrogate="relu"),
     ValueError, r"unknown surrogate 'relu'; expected one of \('hardtanh',\)"),
    ("lra-surrogate-kernel",
     lambda b: _kernel(b, "lra_error")(X, X, 0.1, "sign", "gaussian", False, 0.01, "relu"),
     RuntimeError, "lra_error: unknown surrogate 'relu'; expected None or 'hardtanh'"),
    ("lra-beta", lambda b: _op(b, "lra_error")(X, X, NAN), RuntimeError,
     "lra_error: beta must be finite, got nan"),
    ("lra-slope", lambda b: _op(b, "lra_error")(X, X, 0.1, negative_slope=-INF), RuntimeError,
     "lra_error: negative_slope must be finite, got -inf"),
    # sign_feedback
    ("sign-rank", lambda b: _op(b, "sign_feedback")(torch.zeros(3)), RuntimeError,
     r"sign_feedback: weight must have at least 2 dims \[out, in, \*kernel\], got 1-D"),
    ("sign-dtype", lambda b: _op(b, "sign_feedback")(X.int()), RuntimeError,
     "sign_feedback: weight must be float32, float64, float16 or bfloat16, got Int"),
    ("sign-mode", lambda b: _op(b, "sign_feedback")(X, "random"), ValueError,
     r"unknown mode 'random'; expected one of \('scalar', 'stored', 'seeded', 'seeded_step'\)"),
    ("sign-mode-kernel",
     lambda b: _kernel(b, "sign_feedback")(X, "random", 1.0, None, 0, None, "uniform"),
     RuntimeError, "sign_feedback: unknown mode 'random'; expected one of 'scalar', 'stored'"),
    ("sign-stored-missing", lambda b: _op(b, "sign_feedback")(X, "stored"), RuntimeError,
     "sign_feedback: mode 'stored' needs a magnitude tensor"),
    ("sign-magnitude-shape",
     lambda b: _op(b, "sign_feedback")(X, "stored", magnitude=torch.zeros(4, 3)), RuntimeError,
     r"magnitude must have weight's shape \[3, 4\], got \[4, 3\]"),
    ("sign-magnitude-dtype",
     lambda b: _op(b, "sign_feedback")(X, "stored", magnitude=X.double()), RuntimeError,
     "magnitude must have weight's dtype Float, got Double"),
    ("sign-magnitude-device-meta",
     lambda b: _op(b, "sign_feedback")(X, "stored", magnitude=META), RuntimeError,
     "weight and magnitude must be on the same device, got cpu and meta"),
    ("sign-magnitude-device-kernel",
     lambda b: _cpu_kernel(b, "sign_feedback")(X, "stored", 1.0, META, 0, None, "uniform"),
     RuntimeError, "magnitude must be on weight's device cpu, got meta"),
    ("sign-magnitude-unused",
     lambda b: _op(b, "sign_feedback")(X, "seeded", magnitude=X), RuntimeError,
     "a magnitude tensor is only read in mode 'stored', got one with mode 'seeded'"),
    ("sign-step-negative", lambda b: _op(b, "sign_feedback")(X, "seeded_step", step=-1),
     ValueError, "step must be non-negative, got -1"),
    ("sign-step-too-big", lambda b: _op(b, "sign_feedback")(X, "seeded_step", step=2**63),
     ValueError, r"step must be < 2\*\*63, got 9223372036854775808"),
    ("sign-step-kernel",
     lambda b: _kernel(b, "sign_feedback")(X, "seeded_step", 1.0, None, 0, torch.tensor(-1),
                                                     "uniform"),
     RuntimeError, "sign_feedback: step must be non-negative, got -1"),
    ("sign-step-float-kernel",
     lambda b: _kernel(b, "sign_feedback")(X, "seeded_step", 1.0, None, 0, torch.tensor(1.0),
                                                     "uniform"),
     RuntimeError, "sign_feedback: step must be a 0-d int64 tensor, got Float"),
    ("sign-step-missing-kernel",
     lambda b: _kernel(b, "sign_feedback")(X, "seeded_step", 1.0, None, 0, None, "uniform"),
     RuntimeError, "sign_feedback: mode 'seeded_step' needs a step tensor"),
    ("sign-seed", lambda b: _op(b, "sign_feedback")(X, "seeded", seed=2**64), ValueError,
     r"seed must satisfy 0 <= seed < 2\*\*64"),
    ("sign-dist", lambda b: _op(b, "sign_feedback")(X, "seeded", dist="cauchy"), ValueError,
     "unknown dist 'cauchy'"),
    ("sign-scale", lambda b: _op(b, "sign_feedback")(X, scale=NAN), RuntimeError,
     "sign_feedback: scale must be finite, got nan"),
    # dfa_backward_epilogue
    ("epilogue-rank", lambda b: _op(b, "dfa_backward_epilogue")(torch.zeros(4), torch.zeros(4)),
     RuntimeError, r"dfa_backward_epilogue: grad must be 2-D \[N, D\], got 1-D"),
    ("epilogue-shape", lambda b: _op(b, "dfa_backward_epilogue")(X, X.T), RuntimeError,
     r"grad and saved must have the same shape, got \[3, 4\] and \[4, 3\]"),
    ("epilogue-dtype", lambda b: _op(b, "dfa_backward_epilogue")(X, X.double()), RuntimeError,
     "grad and saved must have the same dtype, got Float and Double"),
    ("epilogue-dtype-int", lambda b: _op(b, "dfa_backward_epilogue")(X.long(), X.long()),
     RuntimeError, "grad must be float32, float64, float16 or bfloat16, got Long"),
    ("epilogue-device-meta", lambda b: _op(b, "dfa_backward_epilogue")(X, META), RuntimeError,
     "grad and saved must be on the same device, got cpu and meta"),
    ("epilogue-device-kernel",
     lambda b: _cpu_kernel(b, "dfa_backward_epilogue")(X, META, "tanh", 0.01, False),
     RuntimeError, "grad and saved must be on the same device, got cpu and meta"),
    ("epilogue-activation", lambda b: _op(b, "dfa_backward_epilogue")(X, X, "swish"),
     ValueError, "unknown activation 'swish'"),
    ("epilogue-activation-kernel",
     lambda b: _kernel(b, "dfa_backward_epilogue")(X, X, "swish", 0.01, False), RuntimeError,
     "unknown activation 'swish'"),
    ("epilogue-from-output",
     lambda b: _op(b, "dfa_backward_epilogue")(X, X, "gelu", saved_is_output=True),
     RuntimeError, "derivative cannot be computed from its output"),
    ("epilogue-slope",
     lambda b: _op(b, "dfa_backward_epilogue")(X, X, "leaky_relu", negative_slope=NAN),
     RuntimeError, "dfa_backward_epilogue: negative_slope must be finite, got nan"),
]


@pytest.mark.parametrize("native", NATIVE)
@pytest.mark.parametrize("call,error,message", [pytest.param(*c[1:], id=c[0]) for c in OP_CASES])
def test_op_rejects(native, call, error, message):
    backend = backends.get(native)
    with pytest.raises(error, match=message):
        call(backend)


def _dfa_net(*, n=2, features=5, output_width=3, **options):
    hidden = torch.nn.Sequential(fnn.DFALinear(4, features, "tanh"))
    head = torch.nn.Linear(features, output_width)
    return hidden, head, fnn.DFAOutput(fnn.dfa_points(hidden), 3, **options)


def _dfa_forward(x, **options):
    hidden, head, output = _dfa_net(**options)
    return output(head(hidden(x)))


def _dfa_targets(targets):
    hidden, head, output = _dfa_net(signal="target")
    return output(head(hidden(torch.zeros(2, 4))), targets)


def _mlp():
    return torch.nn.Sequential(fnn.Linear(4, 5), torch.nn.Tanh(), fnn.Linear(5, 3))


def _sgd(module):
    return torch.optim.SGD(module.parameters(), lr=0.1)


# (id, call(), exception, message regex) for layers, optimizers, diagnostics and data.
API_CASES = [
    # nn.Linear / Conv*d (FA, sign symmetry, KP)
    ("linear-method", lambda: fnn.Linear(4, 3, method="dfa"), ValueError,
     r"unknown method 'dfa'; expected one of \('fa', 'usf', 'frsf', 'brsf', 'kp', 'bp'\)"),
    ("linear-storage", lambda: fnn.Linear(4, 3, method="kp", feedback="seeded"), ValueError,
     "method 'kp' cannot use feedback='seeded'"),
    ("linear-dist", lambda: fnn.Linear(4, 3, feedback_dist="cauchy"), ValueError,
     "unknown feedback_dist 'cauchy'"),
    ("linear-scale", lambda: fnn.Linear(4, 3, feedback_scale=-1.0), ValueError,
     "feedback_scale must be finite and positive, got -1.0"),
    ("linear-seed-negative", lambda: fnn.Linear(4, 3, seed=-1), ValueError,
     r"seed must satisfy 0 <= seed < 2\*\*64, got -1"),
    ("linear-seed-too-big", lambda: fnn.Linear(4, 3, seed=2**64), ValueError,
     r"seed must satisfy 0 <= seed < 2\*\*64"),
    ("linear-seed-unused", lambda: fnn.Linear(4, 3, method="usf", seed=1), ValueError,
     "method 'usf' draws nothing at random; leave seed and feedback_dist None"),
    ("linear-in-features", lambda: fnn.Linear(4, 3)(torch.zeros(2, 5)), RuntimeError,
     r"mat1 and mat2 shapes cannot be multiplied \(2x5 and 4x3\)"),
    ("linear-dtype", lambda: fnn.Linear(4, 3)(torch.zeros(2, 4, dtype=torch.float64)),
     RuntimeError, "mat1 and mat2 must have the same dtype, but got Double and Float"),
    ("linear-device", lambda: fnn.Linear(4, 3)(torch.zeros(2, 4, device="meta")), RuntimeError,
     "Tensor on device cpu is not on the expected device meta"),
    ("linear-set-feedback", lambda: fnn.Linear(4, 3).set_feedback_(torch.zeros(4, 3)),
     ValueError, r"feedback must have the weight's shape \(3, 4\), got \(4, 3\)"),
    ("conv2d-rank", lambda: fnn.Conv2d(2, 3, 3)(torch.zeros(2, 5)), ValueError,
     r"Conv2d expects a \[N, C, \*spatial\] or \[C, \*spatial\] input with 2 spatial dims, "
     r"got shape \(2, 5\)"),
    ("conv2d-channels", lambda: fnn.Conv2d(2, 3, 3)(torch.zeros(1, 4, 5, 5)), RuntimeError,
     "expected input.* to have 2 channels, but got 4 channels"),
    ("conv1d-method", lambda: fnn.Conv1d(2, 3, 3, method="lra"), ValueError,
     "unknown method 'lra'"),
    ("conv3d-seed", lambda: fnn.Conv3d(2, 3, 3, seed=-3), ValueError,
     r"seed must satisfy 0 <= seed < 2\*\*64, got -3"),
    # DFA
    ("dfapoint-spatial", lambda: fnn.DFAPoint(spatial="pooled"), ValueError,
     r"unknown spatial 'pooled'; expected one of \('dense', 'shared'\)"),
    ("dfaoutput-batch-dims", lambda: _dfa_forward(torch.zeros(2, 4), batch_dims=(0, 3)),
     ValueError, "DFAOutput: batch dim 3 is out of range for a 2-D tensor"),
    ("dfaoutput-normalization", lambda: _dfa_net(normalization="batch"), ValueError,
     "unknown normalization 'batch'; expected one of"),
    ("dfaoutput-feedback", lambda: _dfa_net(feedback="learned"), ValueError,
     "unknown feedback 'learned'"),
    ("dfaoutput-signal", lambda: _dfa_net(signal="loss"), ValueError, "unknown signal 'loss'"),
    ("dfaoutput-dist", lambda: _dfa_net(dist="cauchy"), ValueError, "unknown dist 'cauchy'"),
    ("dfaoutput-scale", lambda: _dfa_net(scale=INF), ValueError, "scale must be finite, got inf"),
    ("dfaoutput-seed", lambda: _dfa_net(seed=-1), ValueError,
     r"seed must satisfy 0 <= seed < 2\*\*64, got -1"),
    ("dfaoutput-num-outputs", lambda: fnn.DFAOutput([fnn.DFAPoint()], 0), ValueError,
     "num_outputs must be a positive int, got 0"),
    ("dfaoutput-output-width", lambda: _dfa_forward(torch.zeros(2, 4), output_width=4),
     ValueError, r"DFAOutput\(num_outputs=3\) got an output of shape \[2, 4\]"),
    ("dfaoutput-targets-range", lambda: _dfa_targets(torch.tensor([0, 3])), ValueError,
     r"targets must lie in \[0, 3\), got values in \[0, 3\]"),
    ("dfaoutput-targets-dtype", lambda: _dfa_targets(torch.zeros(2)), ValueError,
     r"targets must be int64 class indices of shape \[2\]"),
    ("dfalinear-activation", lambda: fnn.DFALinear(4, 3, "swish"), ValueError,
     "unknown activation 'swish'"),
    ("dfalinear-slope", lambda: fnn.DFALinear(4, 3, "leaky_relu", negative_slope=NAN),
     ValueError, "negative_slope must be finite, got nan"),
    ("dfalinear-in-features", lambda: fnn.DFALinear(4, 3, "tanh")(torch.zeros(2, 5)),
     ValueError, r"DFALinear expected inputs \[\.\.\., 4\], got \[2, 5\]"),
    # LRA
    ("lralinear-activation", lambda: fnn.LRALinear(4, 3, "swish"), ValueError,
     "unknown activation 'swish'"),
    ("lralinear-error", lambda: fnn.LRALinear(4, 3, error="huber"), ValueError,
     r"unknown error 'huber'; expected one of \('gaussian', 'cauchy'\)"),
    ("lralinear-beta", lambda: fnn.LRALinear(4, 3, beta=0.0), ValueError,
     "beta must be a finite number > 0, got 0.0"),
    ("lralinear-in-features", lambda: fnn.LRALinear(4, 3)(torch.zeros(2, 5)), ValueError,
     r"LRALinear: expected input \[\.\.\., 4\], got \(2, 5\)"),
    ("lralinear-surrogate", lambda: fnn.LRALinear(4, 3, "sign", surrogate="tanh"), ValueError,
     r"unknown surrogate 'tanh'; expected one of \('hardtanh',\)"),
    ("lraoutput-reduction", lambda: fnn.LRAOutput(4, 3, loss_reduction="none"), ValueError,
     "unknown loss_reduction 'none'"),
    ("lra-widths", lambda: fnn.LRA([4]), ValueError,
     r"widths needs an input and an output size, got \[4\]"),
    # Bottleneck
    ("bottleneck-fraction", lambda: fnn.Bottleneck(torch.nn.Linear(3, 3), 1.5), ValueError,
     r"fraction must be in \(0, 1\], got 1.5"),
    ("bottleneck-seed", lambda: fnn.Bottleneck(torch.nn.Linear(3, 3), 0.5, seed=-1), ValueError,
     r"seed must satisfy 0 <= seed < 2\*\*64, got -1"),
    # optimizers
    ("kolenpollack-no-kp", lambda: optim.KolenPollack(_sgd(_mlp()), _mlp()), ValueError,
     "KolenPollack: the model has no layer with method='kp'"),
    ("kolenpollack-optimizer", lambda: optim.KolenPollack(object(), _mlp()), TypeError,
     "KolenPollack wraps a torch.optim.Optimizer, got object"),
    ("batchmanhattan-optimizer", lambda: optim.BatchManhattan([]), TypeError,
     "BatchManhattan wraps a torch.optim.Optimizer, got list"),
    ("constrain-weight-norm", lambda: optim.constrain_weight_norm(torch.nn.Linear(2, 2)),
     ValueError, "constrain_weight_norm: the model has no fastcredit layer"),
    # diagnostics
    ("alignment-empty-batch",
     lambda: diagnostics.alignment(_mlp(), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)),
     ValueError, r"alignment: the probe batch is empty \(x of shape \(0, 4\)\)"),
    ("alignment-no-weights",
     lambda: diagnostics.alignment(torch.nn.Tanh(), X, torch.zeros(3, dtype=torch.long)),
     ValueError, "alignment: the model has no module with a trainable weight"),
    ("alignment-labels",
     lambda: diagnostics.alignment(_mlp(), torch.zeros(6, 4), torch.zeros(5, dtype=torch.long)),
     ValueError, r"Expected input batch_size \(6\) to match target batch_size \(5\)"),
    # data
    ("data-unknown", lambda: data.load("cifar10"), ValueError,
     r"unknown idx dataset 'cifar10'; expected one of \('fashion-mnist', 'mnist'\)"),
]


@pytest.mark.parametrize("call,error,message", [pytest.param(*c[1:], id=c[0]) for c in API_CASES])
def test_api_rejects(call, error, message):
    with pytest.raises(error, match=message):
        call()


CLI_CASES = [
    ("seed-negative", ["--seed", "-1"],
     r"argument --seed: must satisfy 0 <= seed < 2\*\*64, got -1"),
    ("seed-too-big", ["--seed", str(2**64)], r"argument --seed: must satisfy 0 <= seed <"),
    ("batch-size", ["--batch-size", "0"], "argument --batch-size: must be a positive integer"),
    ("threads", ["--threads", "-2"], "argument --threads: must be a positive integer, got -2"),
    ("hidden", ["--hidden", "0"], "argument --hidden: must be a positive integer, got 0"),
    ("max-steps", ["--max-steps", "0"], "argument --max-steps: must be a positive integer, got 0"),
    ("lr-inf", ["--lr", "inf"],
     r"argument --lr: must be a positive number below 3.4e38 \(float32\), got inf"),
    ("model", ["--model", "vgg"], "argument --model: invalid choice: 'vgg'"),
    ("optimizer", ["--optimizer", "lbfgs"], "argument --optimizer: invalid choice: 'lbfgs'"),
]


@pytest.mark.parametrize("args,message", [pytest.param(*c[1:], id=c[0]) for c in CLI_CASES])
def test_cli_rejects_with_exit_2_and_one_line(args, message, capsys):
    # tests/test_cli.py runs the command as a subprocess for --method, --epochs, --lr, --dataset
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *args])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert re.search(message, lines[0]), lines[0]


# ---- zero-size inputs work --------------------------------------------------------------------
@pytest.mark.parametrize("native", NATIVE)
def test_ops_accept_zero_size_inputs(native):
    backend = backends.get(native)
    assert backend.feedback_matrix(1, 0, 5).shape == (0, 5)
    assert backend.feedback_matrix(1, 5, 0).shape == (5, 0)
    project = backend.op("seeded_project")
    assert project(torch.zeros(0, 7), 3, 5).shape == (0, 5)
    assert project(torch.zeros(4, 7), 3, 0).shape == (4, 0)
    assert torch.equal(project(torch.ones(4, 0), 3, 5), torch.zeros(4, 5))  # empty sum
    assert backend.op("lra_error")(torch.zeros(0, 3), torch.zeros(0, 3), 0.1).shape == (0, 3)
    for shape in [(0, 3), (3, 0), (2, 0, 3)]:
        for mode in ("scalar", "seeded"):
            assert backend.op("sign_feedback")(torch.zeros(shape), mode, seed=1).shape == shape
    delta, grad_bias = backend.op("dfa_backward_epilogue")(torch.zeros(0, 3), torch.zeros(0, 3))
    assert delta.shape == (0, 3) and torch.equal(grad_bias, torch.zeros(3))
    delta, grad_bias = backend.op("dfa_backward_epilogue")(torch.zeros(3, 0), torch.zeros(3, 0))
    assert delta.shape == (3, 0) and grad_bias.shape == (0,)


def _zero_batch_gradients(model, x):
    x = x.clone().requires_grad_()
    out = model(x)
    out.sum().backward()
    return out, x.grad, [p.grad for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize(
    "method,feedback",
    [(m, None) for m in ("fa", "usf", "frsf", "brsf", "kp", "bp")]
    + [("fa", "seeded"), ("frsf", "seeded")],
)
def test_feedback_layers_accept_a_zero_batch(method, feedback):
    for layer, x, out_shape in [
        (fnn.Linear(4, 3, method=method, feedback=feedback), torch.zeros(0, 4), (0, 3)),
        (fnn.Conv2d(2, 3, 3, method=method, feedback=feedback), torch.zeros(0, 2, 5, 5),
         (0, 3, 3, 3)),
    ]:
        out, grad_x, grads = _zero_batch_gradients(layer, x)
        assert out.shape == out_shape and grad_x.shape == x.shape
        assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)


def test_zero_width_linear_layer_backward():
    out, grad_x, (grad_w, grad_b) = _zero_batch_gradients(
        fnn.Linear(0, 3, feedback="seeded"), torch.zeros(2, 0))
    assert out.shape == (2, 3) and grad_x.shape == (2, 0)
    assert grad_w.shape == (3, 0) and torch.equal(grad_b, torch.full((3,), 2.0))


@pytest.mark.parametrize("feedback", ["seeded", "stored", "shared"])
def test_dfa_lra_and_bottleneck_accept_a_zero_batch(feedback):
    hidden, head, output = _dfa_net(feedback=feedback)
    # a first non-empty forward fixes each point's geometry; then an empty batch trains nothing
    output(head(hidden(torch.zeros(2, 4)))).sum().backward()
    hidden.zero_grad()
    out = output(head(hidden(torch.zeros(0, 4))))
    out.sum().backward()
    assert out.shape == (0, 3)
    assert torch.equal(hidden[0].weight.grad, torch.zeros(5, 4))
    for model, width in [(fnn.LRA([4, 5, 3]), 3),
                         (fnn.Bottleneck(fnn.Linear(4, 3), 0.5), 3)]:
        out, grad_x, grads = _zero_batch_gradients(model, torch.zeros(0, 4))
        assert out.shape == (0, width)
        assert all(g is None or torch.equal(g, torch.zeros_like(g)) for g in grads)


# ---- overlapping (expanded) inputs are read, not rejected ---------------------------------------
@pytest.mark.parametrize("native", NATIVE)
def test_expanded_read_only_inputs_match_the_reference(native):
    backend = backends.get(native)
    row = torch.randn(1, 6, dtype=torch.float64)
    x = row.expand(5, 6)  # every row aliases the same memory
    dense = x.contiguous()
    torch.testing.assert_close(backend.op("seeded_project")(x, 9, 4),
                               reference.seeded_project(dense, 9, 4), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(backend.op("lra_error")(x, dense, 0.2),
                               reference.lra_error(dense, dense, 0.2), rtol=1e-12, atol=1e-12)
    got = backend.op("dfa_backward_epilogue")(x, dense, "tanh")
    want = reference.dfa_backward_epilogue(dense, dense, "tanh")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    weight = torch.randn(3, 1, dtype=torch.float64).expand(3, 4)
    torch.testing.assert_close(backend.op("sign_feedback")(weight, "seeded", seed=2),
                               reference.sign_feedback(weight.contiguous(), "seeded", seed=2))


@pytest.mark.parametrize("native", NATIVE)
def test_fill_accepts_non_overlapping_interleaved_and_transposed_outputs(native):
    backend = backends.get(native)
    want = reference.feedback_matrix(5, 3, 2, dtype=torch.float64)
    # sizes (3, 2) with strides (2, 3) touch offsets 0, 3, 2, 5, 4, 7: distinct, not dense
    storage = torch.full((8,), NAN, dtype=torch.float64)
    out = storage.as_strided((3, 2), (2, 3))
    backend.op("feedback_fill_")(out, 5)
    assert torch.equal(out, want)
    assert math.isnan(storage[1]) and math.isnan(storage[6])  # untouched gaps
    out_t = torch.empty(2, 3, dtype=torch.float64).T
    backend.op("feedback_fill_")(out_t, 5)
    assert torch.equal(out_t, want)


# ---- NaN / Inf propagate exactly as in PyTorch -----------------------------------------------
def _with_non_finite(shape, generator):
    t = torch.randn(*shape, dtype=torch.float64, generator=generator)
    t[0, 0], t[1, 2], t[2, 1] = NAN, INF, -INF
    return t


@pytest.mark.parametrize("native", NATIVE)
def test_ops_propagate_nan_and_inf_like_their_pytorch_references(native):
    backend = backends.get(native)
    generator = torch.Generator().manual_seed(0)
    bad = _with_non_finite((4, 5), generator)
    good = torch.randn(4, 5, dtype=torch.float64, generator=generator)

    def same(got, want):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)

    same(backend.op("seeded_project")(bad, 3, 6), reference.seeded_project(bad, 3, 6))
    same(backend.op("seeded_project")(bad, 3, 6, transpose=True),
         reference.seeded_project(bad, 3, 6, transpose=True))
    for activation in reference.ACTIVATIONS:
        for a, d in [(bad, good), (good, bad)]:
            same(backend.op("lra_error")(a, d, 0.1, activation, "cauchy", True),
                 reference.lra_error(a, d, 0.1, activation, "cauchy", True))
        for grad, saved in [(bad, good), (good, bad)]:
            want = reference.dfa_backward_epilogue(grad, saved, activation)
            if activation == "relu6":
                # torch's relu6'(NaN) depends on the element's position (0 in its vectorised
                # loop, 1 in the scalar tail); ours is always 1, as torch's relu'(NaN)
                delta = torch.where(saved.isnan(), grad, want[0])
                want = (delta, delta.sum(0))
            same(backend.op("dfa_backward_epilogue")(grad, saved, activation), want)
    magnitude = _with_non_finite((4, 5), generator).abs()
    for mode, kwargs in [("scalar", {}), ("seeded", {"seed": 4}),
                         ("stored", {"magnitude": magnitude})]:
        same(backend.op("sign_feedback")(bad, mode, **kwargs),
             reference.sign_feedback(bad, mode, **kwargs))
    same(backend.op("sign_feedback")(good, "stored", magnitude=magnitude),
         reference.sign_feedback(good, "stored", magnitude=magnitude))
    # the seeded matrices never produce a non-finite value, and a non-finite scale is refused
    assert torch.isfinite(backend.feedback_matrix(1, 64, 64, dist="normal")).all()
