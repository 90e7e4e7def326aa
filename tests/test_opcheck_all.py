"""torch.library.opcheck on every fastcredit op, every test utility named (schema, autograd
registration, fake tensor, AOT dispatch with dynamic shapes), in float32 and in the autocast
dtype bfloat16, with inputs that require grad where the op is differentiable."""

import pytest
import torch

TEST_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor",
              "test_aot_dispatch_dynamic")


def _cases(dtype):
    def randn(*shape, grad=False):
        return torch.randn(*shape, dtype=dtype).requires_grad_(grad)

    weight = randn(5, 3, 2)
    return {
        "feedback_fill_": [(torch.empty(7, 33, dtype=dtype), 3, "normal", 0.5)],
        "seeded_project": [(randn(7, 33, grad=True), 12, 5, "uniform", 0.5, transpose)
                           for transpose in (False, True)],
        "lra_error": [(randn(7, 9), randn(7, 9), 0.1, "tanh", "gaussian", False, 0.01),
                      (randn(3, 4, 5), randn(3, 4, 5), 0.2, "leaky_relu", "cauchy", True, 0.1),
                      (randn(7, 9), randn(7, 9), 0.1, "sign", "gaussian", True, 0.01,
                       "hardtanh")],
        "sign_feedback": [(weight, "scalar", 0.5, None, 0, None, "uniform"),
                          (weight, "stored", 0.5, randn(5, 3, 2, grad=True), 0, None, "uniform"),
                          (weight, "seeded_step", 0.5, None, 8, torch.tensor(2), "rademacher")],
        "dfa_backward_epilogue": [(randn(6, 10), randn(6, 10), "gelu", 0.01, False),
                                  (randn(6, 10), randn(6, 10).tanh(), "tanh", 0.01, True)],
    }


def test_every_registered_op_is_covered():
    import fastcredit  # noqa: F401 - registers the ops

    registered = {name.split("::")[1] for name in torch._C._dispatch_get_all_op_names()
                  if name.startswith("fastcredit::")}
    assert registered == set(_cases(torch.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck_every_op_including_aot_dispatch_dynamic(native_backend, dtype):
    library = native_backend.library()
    for name, cases in _cases(dtype).items():
        for args in cases:
            args = tuple(a.to(native_backend.device) if isinstance(a, torch.Tensor) else a
                         for a in args)
            result = torch.library.opcheck(getattr(library, name), args, test_utils=TEST_UTILS)
            assert set(result) == set(TEST_UTILS) and set(result.values()) == {"SUCCESS"}, name
