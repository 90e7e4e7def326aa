"""The float32 generator ("uniform32", "normal32"): the Philox words of "uniform" / "normal"
mapped in float32 arithmetic, for GPUs whose FP64 rate is a small fraction of FP32.

Checked against the FP64 twin for the same words, theory (tails here; moments, the uniform
histogram and the float32 oracle in tests/test_feedback_matrix.py) and for determinism; the
ops that take a dist (feedback_fill_, seeded_project, sign_feedback) and the layers'
feedback_dist accept it."""

import math

import pytest
import torch

import fastcredit
from fastcredit import nn as fnn
from fastcredit.nn.fa.rule import default_scale

import backends

FLOAT32_DISTS = ("uniform32", "normal32")
N_DRAWS = 1024 * 1024
# normal32 against normal for the same words, on the host (C library logf, no FMA), in units
# of 2**-24 relative: logf's error (< 1) halved by sqrt, sqrt's rounding 1/2, the angle's
# rounding 1/2 plus float32's 2 pi (0.47), the sin/cos polynomials' roundings ~1, the product
# 1/2: ~3.5, and a float32 ulp is 1 to 2 such units. Measured on 2**20 draws: max 3.12 ulps,
# mean 0.49. The bound leaves room for another C library's logf.
NORMAL32_ULPS = 4


def _ulp32(values: torch.Tensor) -> torch.Tensor:
    """The spacing of float32 numbers at |values| (the smallest normal spacing at 0)."""
    _, exponent = torch.frexp(values.float().abs())
    return torch.ldexp(torch.ones_like(values, dtype=torch.float64),
                       (exponent - 24).clamp(min=-149).to(torch.int64))


@pytest.mark.parametrize("scale", [1.0, 0.5, -0.375])
def test_uniform32_equals_uniform_when_the_scale_is_a_float32(native_backend, scale):
    rows, cols = (5, 23) if native_backend.slow else (64, 129)
    a = native_backend.feedback_matrix(9, rows, cols, dist="uniform32", scale=scale)
    b = native_backend.feedback_matrix(9, rows, cols, dist="uniform", scale=scale)
    assert torch.equal(a, b)


@pytest.mark.parametrize("scale", [1 / 3, 0.1234567, -7.7e-3])
def test_uniform32_is_uniform_times_the_float32_scale_rounded_once(native_backend, scale):
    rows, cols = (5, 23) if native_backend.slow else (64, 129)
    unit = native_backend.feedback_matrix(9, rows, cols, dist="uniform", dtype=torch.float64)
    got = native_backend.feedback_matrix(9, rows, cols, dist="uniform32", scale=scale,
                                         dtype=torch.float64)
    # 24-bit value x 24-bit float32 scale: exact in float64, so this is one float32 rounding
    scale32 = float(torch.tensor(scale, dtype=torch.float32))
    assert torch.equal(got, (unit * scale32).float().double())
    # and within one float32 ulp of the FP64 path's rounded product
    fp64 = native_backend.feedback_matrix(9, rows, cols, dist="uniform", scale=scale)
    assert ((got - fp64.double()).abs() <= _ulp32(fp64)).all()


def test_normal32_is_within_a_few_float32_ulps_of_normal():
    fp64 = fastcredit.feedback_matrix(123, 1024, 1024, dist="normal", dtype=torch.float64)
    fp32 = fastcredit.feedback_matrix(123, 1024, 1024, dist="normal32", dtype=torch.float64)
    assert torch.equal(fp32.float().double(), fp32)  # float32 numbers in a float64 tensor
    ulps = (fp32 - fp64).abs() / _ulp32(fp64)
    assert ulps.max().item() <= NORMAL32_ULPS
    assert ulps.mean().item() < 0.6


def test_emulated_cuda_kernels_give_the_cpu_values_on_the_same_host():
    # Same C library here, so the same bits; on a GPU the device's float functions differ.
    emulated = backends.get("cuda_emulated")
    x = torch.randn(5, 19)
    weight = torch.randn(7, 3, 5)
    for dist in FLOAT32_DISTS:
        want = fastcredit.feedback_matrix(2**64 - 3, 21, 67, dist=dist, scale=0.7)
        assert torch.equal(emulated.feedback_matrix(2**64 - 3, 21, 67, dist=dist, scale=0.7),
                           want)
        project = emulated.op("seeded_project")(x, 4, 66, dist=dist, scale=0.2, transpose=True)
        torch.testing.assert_close(project, fastcredit.seeded_project(
            x, 4, 66, dist=dist, scale=0.2, transpose=True), rtol=1e-6, atol=1e-6)
        for mode in ("seeded", "seeded_step"):
            kwargs = dict(seed=12345, step=2**40, dist=dist, scale=0.3)
            assert torch.equal(emulated.op("sign_feedback")(weight, mode, **kwargs),
                               fastcredit.sign_feedback(weight, mode, **kwargs)), (dist, mode)


@pytest.mark.parametrize("dist", FLOAT32_DISTS)
def test_deterministic_across_calls_and_thread_counts(dist):
    first = fastcredit.feedback_matrix(7, 300, 301, dist=dist)
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert torch.equal(fastcredit.feedback_matrix(7, 300, 301, dist=dist), first)
    finally:
        torch.set_num_threads(previous)
    # a submatrix of every larger matrix, like the FP64 dists
    assert torch.equal(fastcredit.feedback_matrix(7, 13, 17, dist=dist), first[:13, :17])


def test_normal32_tails_match_the_normal_distribution():
    values = fastcredit.feedback_matrix(55, 1024, 1024, dist="normal32",
                                        dtype=torch.float64).flatten()
    assert torch.isfinite(values).all()
    # the largest radius: u1 = 2**-24, sqrt(48 ln 2) = 5.768...
    assert values.abs().max().item() <= math.sqrt(48 * math.log(2)) * (1 + 2**-22)
    for threshold in (2.0, 3.0, 4.0):
        p = math.erfc(threshold / math.sqrt(2))  # P(|Z| > t)
        count = (values.abs() > threshold).sum().item()
        assert abs(count - N_DRAWS * p) < 6 * math.sqrt(N_DRAWS * p * (1 - p)) + 1, threshold


@pytest.mark.parametrize("dist", FLOAT32_DISTS)
@pytest.mark.parametrize("transpose", [False, True])
def test_seeded_project_is_x_times_the_float32_matrix(native_backend, dist, transpose):
    n, k, cols = (3, 9, 11) if native_backend.slow else (17, 70, 45)
    x = torch.randn(n, k, dtype=torch.float64)
    got = native_backend.op("seeded_project")(x, 31, cols, dist=dist, scale=0.25,
                                             transpose=transpose)
    shape = (cols, k) if transpose else (k, cols)
    f = native_backend.feedback_matrix(31, *shape, dist=dist, scale=0.25, dtype=torch.float64)
    torch.testing.assert_close(got, x @ (f.T if transpose else f), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dist", FLOAT32_DISTS)
def test_sign_feedback_seeded_uses_the_float32_magnitudes(native_backend, dist):
    weight = torch.randn(6, 4, 3, dtype=torch.float64)
    got = native_backend.op("sign_feedback")(weight, "seeded", seed=8, dist=dist, scale=0.5)
    f = native_backend.feedback_matrix(8, 6, 12, dist=dist, scale=0.5, dtype=torch.float64)
    assert torch.equal(got, torch.sign(weight) * f.abs().reshape(weight.shape))


def test_layers_take_the_float32_dists_with_the_fp64_twins_scale():
    shape = (200, 300)
    assert default_scale("fa", shape, "uniform32") == default_scale("fa", shape, "uniform")
    assert default_scale("fa", shape, "normal32") == default_scale("fa", shape, "normal")
    layer = fnn.Linear(300, 200, method="fa", seed=5, feedback_dist="normal32")
    b = layer.feedback_matrix()
    assert torch.equal(b, fastcredit.feedback_matrix(5, 200, 300, dist="normal32",
                                                     scale=math.sqrt(2 / 500)))
    assert b.var().item() == pytest.approx(2.0 / 500, rel=0.03)


@pytest.mark.parametrize("native", ["cpu", "cuda_emulated"])
def test_rejects_a_scale_beyond_float32_range(native):
    backend = backends.get(native)
    out = torch.empty(2, 3)
    with pytest.raises(RuntimeError, match="feedback_fill_: scale must be within float32's range"
                                           " for dist 'normal32'"):
        backend.op("feedback_fill_")(out, 1, dist="normal32", scale=1e39)
    with pytest.raises(RuntimeError, match="seeded_project: scale must be within float32"):
        backend.op("seeded_project")(out, 1, 4, dist="uniform32", scale=-1e39)
    with pytest.raises(RuntimeError, match="sign_feedback: scale must be within float32"):
        backend.op("sign_feedback")(out, "seeded", dist="uniform32", scale=1e39)
    backend.op("feedback_fill_")(out.double(), 1, dist="normal", scale=1e39)  # FP64: fine


@pytest.mark.parametrize("dist", FLOAT32_DISTS)
def test_opcheck(native_backend, dist):
    library = native_backend.library()
    x = torch.randn(5, 9)
    for dtype in (torch.float32, torch.float64):
        out = torch.empty(7, 33, dtype=dtype)
        torch.library.opcheck(library.feedback_fill_, (out, 3, dist, 0.5))
        torch.library.opcheck(library.seeded_project, (x.to(dtype), 3, 6, dist, 0.5, True))
        torch.library.opcheck(library.sign_feedback,
                              (x.to(dtype), "seeded", 0.5, None, 3, None, dist))
