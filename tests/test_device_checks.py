"""Mixed-device calls get the op's own "same device" error, never a failed internal assert.

CUDA outranks CPU in dispatch, so `lra_error(a_cpu, d_cuda)` reaches the CUDA kernel, which
must check devices before it builds its device guard (a CUDAGuard from a CPU tensor fails with
INTERNAL ASSERT FAILED). The CUDA and emulated registrations share that order
(csrc/device_ops.h); the emulated library's device is the CPU, and its stand-in for the guard
fails like a CUDAGuard on any other device. Calling its CPU kernel directly (redispatch) with
a meta tensor first and a CPU tensor second is the emulated twin of (cpu, cuda).
"""

import pytest
import torch

import backends

CPU_KERNEL = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)


def _kernel(native, name):
    """Calls `name`'s CPU kernel of that backend, whatever the arguments' devices."""
    overload = getattr(backends.get(native).library(), name).default
    return lambda *args: overload.redispatch(CPU_KERNEL, *args)


MIXED = {
    "lra_error": (
        lambda foreign, home: (foreign, home, 0.5, "tanh", "gaussian", False, 0.01),
        "pre_activation and displacement must be on the same device",
    ),
    "dfa_backward_epilogue": (
        lambda foreign, home: (foreign, home, "tanh", 0.01, False),
        "grad and saved must be on the same device",
    ),
    "sign_feedback": (
        lambda foreign, home: (foreign, "stored", 1.0, home, 0, None, "uniform"),
        "magnitude must be on weight's device",
    ),
}


@pytest.mark.parametrize("native", ["cpu", "cuda_emulated"])
@pytest.mark.parametrize("op", sorted(MIXED))
@pytest.mark.parametrize("first", ["foreign", "home"])
def test_mixed_devices_raise_the_ops_own_error(native, op, first):
    arguments, message = MIXED[op]
    home = torch.zeros(3, 4)
    foreign = torch.zeros(3, 4, device="meta")
    pair = (foreign, home) if first == "foreign" else (home, foreign)
    with pytest.raises(RuntimeError, match=message) as raised:
        _kernel(native, op)(*arguments(*pair))
    assert "INTERNAL ASSERT" not in str(raised.value)


def test_emulated_device_context_fails_like_a_cuda_guard_on_a_foreign_device():
    # What the tests above would see if an op built its context before checking devices.
    out = torch.empty(2, 3, device="meta")
    with pytest.raises(RuntimeError, match="INTERNAL ASSERT FAILED.*context built for meta"):
        _kernel("cuda_emulated", "feedback_fill_")(out, 1, "uniform", 1.0)
