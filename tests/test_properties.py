"""Property-based tests: every op against its reference over random shapes (0- and 1-sized
included), dtypes, strides, seeds and options, on the CPU and the emulated CUDA kernels.

The example count comes from the Hypothesis profile (tests/conftest.py; HYPOTHESIS_PROFILE)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fastcredit import reference

import backends

dists = st.sampled_from(reference.DISTS)
seeds = st.integers(0, 2**64 - 1)
small = st.integers(0, 9)
# A non-contiguous layout: (transposed storage, column step).
layouts = st.tuples(st.booleans(), st.integers(1, 3))
float_dtypes = st.sampled_from([torch.float32, torch.float64])
all_dtypes = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16])
# Relative tolerance of a result computed in float64 (or float32 for the half types) and
# rounded once to the dtype, against the reference rounded the same way.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-3,
             torch.bfloat16: 8e-3}


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


def _close(got, want, dtype, dist=None):
    # normal32's op and reference compute log/sin/cos in float32 with different libraries
    # (C library vs torch's): a few float32 ulps apart whatever the output dtype
    tol = TOLERANCE[dtype]
    if dist == "normal32":
        tol = max(tol, TOLERANCE[torch.float32])
    torch.testing.assert_close(got, want, rtol=tol, atol=tol, equal_nan=True)


@pytest.mark.parametrize("name", ["cpu", "cuda_emulated"])
@given(rows=small, cols=small, seed=seeds, dist=dists, scale=st.floats(-4, 4), dtype=all_dtypes,
       transposed_out=st.booleans())
def test_feedback_fill_matches_reference(name, rows, cols, seed, dist, scale, dtype,
                                         transposed_out):
    backend = _backend(name)
    out = torch.empty((cols, rows) if transposed_out else (rows, cols), dtype=dtype)
    out = out.T if transposed_out else out
    backend.op("feedback_fill_")(out, seed, dist=dist, scale=scale)
    want = reference.feedback_matrix(seed, rows, cols, dist=dist, scale=scale, dtype=dtype)
    if dist in ("normal", "normal32") or dtype in (torch.float16, torch.bfloat16):
        _close(out, want, dtype, dist)  # normal: libm-free but not bit-equal to torch's log/sin
    else:
        assert torch.equal(out, want)


@pytest.mark.parametrize("name", ["cpu", "cuda_emulated"])
@given(n=small, k=st.integers(0, 40), cols=st.integers(0, 40), seed=seeds, dist=dists,
       transpose=st.booleans(), layout=layouts, dtype=float_dtypes)
def test_seeded_project_matches_reference(name, n, k, cols, seed, dist, transpose, layout, dtype):
    backend = _backend(name)
    x = _strided(torch.randn(n, k, dtype=dtype), *layout)
    got = backend.op("seeded_project")(x, seed, cols, dist=dist, scale=0.5, transpose=transpose)
    want = reference.seeded_project(x, seed, cols, dist=dist, scale=0.5, transpose=transpose)
    _close(got, want, dtype, dist)


@pytest.mark.parametrize("name", ["cpu", "cuda_emulated"])
@given(n=small, d=small, beta=st.floats(-2, 2), activation=st.sampled_from(reference.ACTIVATIONS),
       error=st.sampled_from(["gaussian", "cauchy"]), use_fprime=st.booleans(), layout=layouts,
       dtype=float_dtypes)
def test_lra_error_matches_reference(name, n, d, beta, activation, error, use_fprime, layout,
                                     dtype):
    backend = _backend(name)
    a = _strided(torch.randn(n, d, dtype=dtype) * 3, *layout)
    disp = torch.randn(n, d, dtype=dtype)
    got = backend.op("lra_error")(a, disp, beta, activation, error, use_fprime, 0.02)
    want = reference.lra_error(a, disp, beta, activation, error, use_fprime, 0.02)
    _close(got, want, dtype)


@pytest.mark.parametrize("name", ["cpu", "cuda_emulated"])
@given(shape=st.lists(st.integers(0, 5), min_size=2, max_size=4),
       mode=st.sampled_from(reference.SIGN_FEEDBACK_MODES), seed=seeds,
       step=st.integers(0, 2**63 - 1), dist=dists, scale=st.floats(-3, 3), transposed=st.booleans(),
       dtype=all_dtypes)
def test_sign_feedback_matches_reference(name, shape, mode, seed, step, dist, scale, transposed,
                                         dtype):
    backend = _backend(name)
    weight = torch.randn(shape, dtype=torch.float64)
    weight[weight.abs() < 0.2] = 0  # sign(0) = 0 must hold too
    weight = weight.to(dtype)
    if transposed:  # same values, non-contiguous
        weight = weight.transpose(0, 1).contiguous().transpose(0, 1)
    magnitude = torch.randn(shape, dtype=dtype) if mode == "stored" else None
    kwargs = dict(scale=scale, magnitude=magnitude, seed=seed, step=step, dist=dist)
    got = backend.op("sign_feedback")(weight, mode, **kwargs)
    want = reference.sign_feedback(weight, mode, **kwargs)
    assert got.shape == weight.shape and got.is_contiguous()
    _close(got, want, dtype, dist)


@pytest.mark.parametrize("name", ["cpu", "cuda_emulated"])
@given(n=small, d=small, activation=st.sampled_from(reference.ACTIVATIONS),
       negative_slope=st.sampled_from([0.0, 0.01, 0.3, -0.5]), saved_is_output=st.booleans(),
       grad_layout=layouts, saved_layout=layouts, dtype=all_dtypes)
def test_dfa_backward_epilogue_matches_reference(name, n, d, activation, negative_slope,
                                                 saved_is_output, grad_layout, saved_layout,
                                                 dtype):
    if saved_is_output and not reference.grad_from_output_supported(activation, negative_slope):
        saved_is_output = False  # rejected by design; tests/test_validation.py checks that
    backend = _backend(name)
    grad = _strided(torch.randn(n, d).to(dtype), *grad_layout)
    pre = torch.randn(n, d, dtype=torch.float64) * 3
    saved = reference.activation_value(pre, activation, negative_slope) if saved_is_output else pre
    saved = _strided(saved.to(dtype), *saved_layout)
    kwargs = dict(negative_slope=negative_slope, saved_is_output=saved_is_output)
    delta, grad_bias = backend.op("dfa_backward_epilogue")(grad, saved, activation, **kwargs)
    want_delta, want_bias = reference.dfa_backward_epilogue(grad, saved, activation, **kwargs)
    _close(delta, want_delta, dtype)
    # the bias sums n rounded products: allow n roundings of the larger dtypes' error
    tol = TOLERANCE[dtype] * max(n, 1)
    torch.testing.assert_close(grad_bias, want_bias, rtol=tol, atol=tol)
