"""Each fused op against the composition of PyTorch ops that computes the same thing (the
"reference" row of each group), at shapes where the ops are used:

- ``dfa_backward_epilogue``: delta = P * f'(a) and its column sum, a [512, 1024] tanh layer;
- ``seeded_project``: DFA's e [128, 10] @ B [10, 1024] (normal draws) and a wide [128, 1024] @
  [1024, 1024] (uniform), against materialising B then one GEMM, and against a stored B;
- ``sign_feedback``: uSF, frSF (stored |M|) and brSF (fresh seeded |M|) for a 1024 x 1024 W;
- ``lra_error``: LRA-E targets and errors for a [256, 4096] tanh layer;
- ``feedback_fill_``: a 1024 x 1024 uniform / normal fill, against torch's own generator.

Run: python -m pytest benchmarks/bench_ops.py --benchmark-enable
"""

import pytest
import torch

import fastcredit
from fastcredit import reference


def _shape(quick: bool, *full: int) -> tuple[int, ...]:
    return tuple(max(1, d // 64) + 3 for d in full) if quick else full


def _epilogue(quick):
    n, d = _shape(quick, 512, 1024)
    grad, out = torch.randn(n, d), torch.rand(n, d) * 2 - 1
    return {
        "fused": lambda: fastcredit.dfa_backward_epilogue(grad, out, "tanh", saved_is_output=True),
        "reference": lambda: reference.dfa_backward_epilogue(grad, out, "tanh",
                                                             saved_is_output=True),
    }


def _projection(quick, n, k, cols, dist):
    n, k, cols = _shape(quick, n, k, cols)
    x = torch.randn(n, k)
    stored = fastcredit.feedback_matrix(1, k, cols, dist=dist)
    return {
        "fused": lambda: fastcredit.seeded_project(x, 1, cols, dist=dist),
        "reference": lambda: x @ fastcredit.feedback_matrix(1, k, cols, dist=dist),
        "stored_matmul": lambda: x @ stored,
    }


def _sign(quick, mode):
    out, inp = _shape(quick, 1024, 1024)
    w = torch.randn(out, inp)
    magnitude = torch.rand(out, inp)
    seed = reference.step_seed(3, 5)
    compositions = {
        "scalar": lambda: torch.sign(w) * 0.1,
        "stored": lambda: torch.sign(w) * magnitude.abs(),
        "seeded_step": lambda: torch.sign(w) * fastcredit.feedback_matrix(seed, out, inp).abs_(),
    }
    options = {"scalar": {"scale": 0.1}, "stored": {"magnitude": magnitude},
               "seeded_step": {"seed": 3, "step": 5}}[mode]
    return {
        "fused": lambda: fastcredit.sign_feedback(w, mode, **options),
        "reference": compositions[mode],
    }


def _lra(quick):
    n, d = _shape(quick, 256, 4096)
    a, disp = torch.randn(n, d), torch.randn(n, d)
    return {
        "fused": lambda: fastcredit.lra_error(a, disp, 0.1, "tanh"),
        "reference": lambda: reference.lra_error(a, disp, 0.1, "tanh"),
    }


def _fill(quick, dist):
    out = torch.empty(_shape(quick, 1024, 1024))
    torch_fill = {"uniform": lambda: out.uniform_(-1, 1), "normal": lambda: out.normal_()}[dist]
    return {
        "fused": lambda: fastcredit.feedback_fill_(out, 1, dist=dist),
        "reference": torch_fill,
    }


CASES = {
    "dfa_backward_epilogue[tanh,512x1024]": _epilogue,
    "seeded_project[128x10x1024,normal]": lambda q: _projection(q, 128, 10, 1024, "normal"),
    "seeded_project[128x1024x1024,uniform]": lambda q: _projection(q, 128, 1024, 1024, "uniform"),
    "sign_feedback[scalar,1024x1024]": lambda q: _sign(q, "scalar"),
    "sign_feedback[stored,1024x1024]": lambda q: _sign(q, "stored"),
    "sign_feedback[seeded_step,1024x1024]": lambda q: _sign(q, "seeded_step"),
    "lra_error[tanh,256x4096]": _lra,
    "feedback_fill_[uniform,1024x1024]": lambda q: _fill(q, "uniform"),
    "feedback_fill_[normal,1024x1024]": lambda q: _fill(q, "normal"),
}
ROWS = [(case, impl) for case, build in CASES.items() for impl in build(True)]


@pytest.mark.parametrize("case,impl", ROWS, ids=[f"{c}-{i}" for c, i in ROWS])
def test_op(measure, quick, case, impl):
    torch.manual_seed(0)
    measure(case, impl, CASES[case](quick)[impl], baseline="reference")
