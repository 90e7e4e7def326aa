"""Property-based tests: every op against its reference over random shapes (0- and 1-sized
included), dtypes, strides, seeds and options, on the CPU and the emulated CUDA kernels."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastcredit import reference

import backends

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
dists = st.sampled_from(reference.DISTS)
seeds = st.integers(0, 2**64 - 1)
small = st.integers(0, 9)


def _backend(name):
    reason = backends.skip_reason(name)
    if reason:
        pytest.skip(reason)
    return backends.BACKENDS[name]


def _strided(tensor: torch.Tensor, transpose: bool, step: int) -> torch.Tensor:
    """The same values in a non-contiguous layout."""
    if transpose:
        tensor = tensor.T.contiguous().T
    if step > 1:
        padded = torch.zeros(tensor.shape[0], tensor.shape[1] * step, dtype=tensor.dtype)
        padded[:, ::step] = tensor
        tensor = padded[:, ::step]
    return tensor


@pytest.mark.parametrize("name", ["cpu", "cuda_emulated"])
@SETTINGS
@given(rows=small, cols=small, seed=seeds, dist=dists, scale=st.floats(-4, 4),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_feedback_fill_matches_reference(name, rows, cols, seed, dist, scale, dtype):
    backend = _backend(name)
    got = backend.feedback_matrix(seed, rows, cols, dist=dist, scale=scale, dtype=dtype)
    want = reference.feedback_matrix(seed, rows, cols, dist=dist, scale=scale, dtype=dtype)
    torch.testing.assert_close(got, want, rtol=1e-6 if dist == "normal" else 0,
                               atol=1e-6 if dist == "normal" else 0)


@pytest.mark.parametrize("name", ["cpu", "cuda_emulated"])
@SETTINGS
@given(n=small, k=st.integers(0, 40), cols=st.integers(0, 40), seed=seeds, dist=dists,
       transpose=st.booleans(), layout=st.tuples(st.booleans(), st.integers(1, 3)))
def test_seeded_project_matches_reference(name, n, k, cols, seed, dist, transpose, layout):
    backend = _backend(name)
    x = _strided(torch.randn(n, k, dtype=torch.float64), *layout)
    got = backend.op("seeded_project")(x, seed, cols, dist=dist, scale=0.5, transpose=transpose)
    want = reference.seeded_project(x, seed, cols, dist=dist, scale=0.5, transpose=transpose)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["cpu", "cuda_emulated"])
@SETTINGS
@given(n=small, d=small, beta=st.floats(-2, 2), activation=st.sampled_from(reference.ACTIVATIONS),
       error=st.sampled_from(["gaussian", "cauchy"]), use_fprime=st.booleans(),
       layout=st.tuples(st.booleans(), st.integers(1, 3)))
def test_lra_error_matches_reference(name, n, d, beta, activation, error, use_fprime, layout):
    backend = _backend(name)
    a = _strided(torch.randn(n, d, dtype=torch.float64) * 3, *layout)
    disp = torch.randn(n, d, dtype=torch.float64)
    got = backend.op("lra_error")(a, disp, beta, activation, error, use_fprime, 0.02)
    want = reference.lra_error(a, disp, beta, activation, error, use_fprime, 0.02)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
