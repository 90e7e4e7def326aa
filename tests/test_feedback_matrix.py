"""The seeded feedback matrix: Philox known answers, determinism, distributions, errors."""

import math

import pytest
import torch

import fastcredit
from fastcredit import reference

DISTS = ("uniform", "normal", "rademacher")

# Random123's known-answer vectors for Philox4x32-10: (counter, key, expected output).
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF,) * 4,
        (0xFFFFFFFF,) * 2,
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter,key,expected", PHILOX_KAT)
def test_reference_philox_matches_random123_known_answers(counter, key, expected):
    words = reference.philox4x32_10(tuple(torch.tensor([c]) for c in counter), key)
    assert tuple(int(w) for w in words) == expected


def _top24_signed(word: int) -> int:
    top = word >> 8
    return top - (1 << 24) if top >= 1 << 23 else top


def test_op_uniform_entries_are_the_known_answer_words(native_backend):
    # Seed 0, row 0, columns 0..3 is Philox at key (0, 0), counter (0, 0, 0, 0); the uniform
    # value is the word's top 24 bits as a signed fraction of 2**23.
    row = native_backend.feedback_matrix(0, 1, 4, dtype=torch.float64)[0] * 2.0**23
    assert row.tolist() == [_top24_signed(w) for w in PHILOX_KAT[0][2]]
    signs = native_backend.feedback_matrix(0, 1, 4, dist="rademacher", dtype=torch.float64)[0]
    assert signs.tolist() == [-1.0 if w >> 31 else 1.0 for w in PHILOX_KAT[0][2]]


@pytest.mark.parametrize("dist", DISTS + ("uniform32", "normal32"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(native_backend, dist, dtype):
    rows, cols = (7, 33) if native_backend.slow else (67, 131)
    got = native_backend.feedback_matrix(2024, rows, cols, dist=dist, scale=0.3, dtype=dtype)
    want = reference.feedback_matrix(2024, rows, cols, dist=dist, scale=0.3, dtype=dtype)
    if dist == "normal":  # the op's own log/sin/cos vs libm: equal to ~1e-15
        torch.testing.assert_close(got, want, rtol=1e-13 if dtype == torch.float64 else 1e-6,
                                   atol=1e-13 if dtype == torch.float64 else 1e-6)
    elif dist == "normal32":  # the C library's logf vs torch's: a few float32 ulps
        torch.testing.assert_close(got, want, rtol=2**-21, atol=1e-7)
    else:
        assert torch.equal(got, want)


@pytest.mark.parametrize("dist", DISTS)
def test_bit_identical_across_calls_threads_and_backends(dist):
    import backends

    torch.set_num_threads(2)
    first = fastcredit.feedback_matrix(7, 300, 301, dist=dist)
    assert torch.equal(first, fastcredit.feedback_matrix(7, 300, 301, dist=dist))
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(first, fastcredit.feedback_matrix(7, 300, 301, dist=dist))
    finally:
        torch.set_num_threads(previous)
    for name in ("cuda_emulated", "cuda"):
        if backends.skip_reason(name) is None:
            other = backends.BACKENDS[name].feedback_matrix(7, 23, 301, dist=dist)
            assert torch.equal(other.cpu(), first[:23]), name


@pytest.mark.parametrize("dist", DISTS)
def test_is_a_submatrix_of_every_larger_matrix(dist):
    big = fastcredit.feedback_matrix(11, 40, 50, dist=dist)
    assert torch.equal(fastcredit.feedback_matrix(11, 13, 17, dist=dist), big[:13, :17])


def test_uniform_values_are_float32_exact_so_dtypes_agree():
    single = fastcredit.feedback_matrix(3, 50, 70, dtype=torch.float32)
    double = fastcredit.feedback_matrix(3, 50, 70, dtype=torch.float64)
    assert torch.equal(single.double(), double)
    assert single.min() >= -1 and single.max() < 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_the_rounded_float32_matrix(native_backend, dtype):
    want = native_backend.feedback_matrix(5, 9, 13, dist="normal", dtype=torch.float32)
    got = native_backend.feedback_matrix(5, 9, 13, dist="normal", dtype=dtype)
    torch.testing.assert_close(got.float(), want.to(dtype).float(), rtol=0, atol=0)


def test_fill_writes_strided_outputs():
    base = torch.zeros(30, 20, dtype=torch.float64)
    view = base.T  # [20, 30], strides (1, 20)
    fastcredit.feedback_fill_(view, 9, dist="normal")
    assert torch.equal(view, fastcredit.feedback_matrix(9, 20, 30, dist="normal",
                                                         dtype=torch.float64))
    sliced = torch.zeros(10, 40)
    fastcredit.feedback_fill_(sliced[:, ::3], 9)
    assert torch.equal(sliced[:, ::3], fastcredit.feedback_matrix(9, 10, 14))
    assert torch.count_nonzero(sliced[:, 1::3]) == 0


def test_scale_multiplies_every_entry():
    unit = fastcredit.feedback_matrix(4, 20, 30, dist="normal", dtype=torch.float64)
    scaled = fastcredit.feedback_matrix(4, 20, 30, dist="normal", scale=-0.25,
                                        dtype=torch.float64)
    assert torch.equal(scaled, unit * -0.25)


# ---- distributions: moments over >= 1e6 draws, within 6 standard errors ----------------------
N_DRAWS = 1024 * 1024


def _moments(values: torch.Tensor):
    v = values.double().flatten()
    mean = v.mean()
    centred = v - mean
    var = centred.pow(2).mean()
    skew = centred.pow(3).mean() / var**1.5
    kurt = centred.pow(4).mean() / var**2
    return mean.item(), var.item(), skew.item(), kurt.item()


@pytest.mark.parametrize(
    "dist,var,kurt,kurt_se",
    [
        # uniform on [-1, 1): var 1/3, kurtosis 9/5; normal: 1, 3; rademacher: 1, 1 (exactly)
        ("uniform", 1 / 3, 1.8, 0.002),
        ("normal", 1.0, 3.0, 0.005),
        ("rademacher", 1.0, 1.0, 1e-5),  # only the sample mean moves it
        # the float32 generator (tests/test_float32_generator.py): the same distributions
        ("uniform32", 1 / 3, 1.8, 0.002),
        ("normal32", 1.0, 3.0, 0.005),
    ],
)
def test_moments_match_theory(dist, var, kurt, kurt_se):
    values = fastcredit.feedback_matrix(123, 1024, 1024, dist=dist, dtype=torch.float64)
    mean, got_var, skew, got_kurt = _moments(values)
    se_mean = math.sqrt(var / N_DRAWS)
    assert abs(mean) < 6 * se_mean
    # centring on the sample mean lowers the variance by mean**2 (< 36 se_mean**2)
    assert abs(got_var - var) < 6 * var * math.sqrt((kurt - 1) / N_DRAWS) + 36 * se_mean**2
    assert abs(skew) < 6 * math.sqrt(6 / N_DRAWS)
    assert abs(got_kurt - kurt) < 6 * kurt_se + 1e-9


@pytest.mark.parametrize("dist", ["uniform", "uniform32"])
def test_uniform_fills_its_interval_evenly(dist):
    values = fastcredit.feedback_matrix(77, 1024, 1024, dist=dist, dtype=torch.float64).flatten()
    assert values.min().item() >= -1 and values.max().item() < 1
    counts = torch.histc(values, bins=20, min=-1, max=1)
    expected = N_DRAWS / 20
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 50  # chi-square, 19 degrees of freedom: P(chi2 > 50) ~ 1e-4


def test_rademacher_takes_only_plus_and_minus_one():
    values = fastcredit.feedback_matrix(5, 100, 100, dist="rademacher")
    assert set(values.unique().tolist()) == {-1.0, 1.0}


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return torch.corrcoef(torch.stack((a, b)))[0, 1].item()


@pytest.mark.parametrize("dist", DISTS)
def test_different_seeds_rows_and_cols_are_uncorrelated(dist):
    n = 512
    bound = 6 / n  # 6 standard errors of a correlation over n*n pairs
    a = fastcredit.feedback_matrix(1, n + 1, n + 1, dist=dist)
    b = fastcredit.feedback_matrix(2, n, n, dist=dist)
    high_seed = fastcredit.feedback_matrix(1 + (1 << 32), n, n, dist=dist)
    assert abs(_corr(a[:n, :n], b)) < bound
    assert abs(_corr(a[:n, :n], high_seed)) < bound
    assert abs(_corr(a[:n, :n], a[1:, :n])) < bound  # neighbouring rows
    assert abs(_corr(a[:n, :n], a[:n, 1:])) < bound  # neighbouring cols, same Philox block too
    # squares too: catches dependence that leaves the plain correlation at zero (Box-Muller
    # pairs share a radius, which is why they are drawn from different words)
    if dist != "rademacher":
        assert abs(_corr(a[:n, :n] ** 2, a[:n, 1:] ** 2)) < bound


# ---- bad input --------------------------------------------------------------------------------
def test_rejects_unknown_dist():
    with pytest.raises(ValueError, match="unknown dist 'gaussian'"):
        fastcredit.feedback_matrix(0, 2, 2, dist="gaussian")
    with pytest.raises(RuntimeError, match="unknown dist 'gaussian'"):
        torch.ops.fastcredit.feedback_fill_(torch.empty(2, 2), 0, "gaussian", 1.0)


def test_rejects_negative_or_non_integer_sizes():
    with pytest.raises(ValueError, match="rows must be non-negative, got -1"):
        fastcredit.feedback_matrix(0, -1, 2)
    with pytest.raises(TypeError, match="cols must be an int"):
        fastcredit.feedback_matrix(0, 2, 2.5)


def test_rejects_out_of_range_seed():
    with pytest.raises(ValueError, match="seed must satisfy 0 <= seed < 2\\*\\*64"):
        fastcredit.feedback_matrix(-1, 2, 2)
    with pytest.raises(TypeError, match="seed must be an int"):
        fastcredit.feedback_matrix(1.0, 2, 2)


def test_full_64_bit_seeds_are_distinct():
    low = fastcredit.feedback_matrix(5, 4, 8)
    assert not torch.equal(low, fastcredit.feedback_matrix(5 + (1 << 63), 4, 8))
    assert not torch.equal(low, fastcredit.feedback_matrix(5 + (1 << 32), 4, 8))
    torch.testing.assert_close(
        fastcredit.feedback_matrix((1 << 64) - 1, 3, 5),
        reference.feedback_matrix((1 << 64) - 1, 3, 5), rtol=0, atol=0)


@pytest.mark.parametrize("native", ["cpu", "cuda_emulated"])
def test_fill_rejects_bad_outputs(native):
    import backends

    fill = backends.get(native).op("feedback_fill_")
    with pytest.raises(RuntimeError, match="out must be 2-D"):
        fill(torch.empty(3), 0)
    with pytest.raises(RuntimeError, match="out must be float32, float64, float16 or bfloat16"):
        fill(torch.empty(2, 2, dtype=torch.int32), 0)
    with pytest.raises(RuntimeError, match="scale must be finite"):
        fill(torch.empty(2, 2), 0, scale=float("nan"))
    with pytest.raises((RuntimeError, ValueError), match="unknown dist 'cauchy'"):
        fill(torch.empty(2, 2), 0, dist="cauchy")


def test_empty_matrices():
    assert fastcredit.feedback_matrix(0, 0, 5).shape == (0, 5)
    assert fastcredit.feedback_matrix(0, 5, 0).shape == (5, 0)


def test_opcheck_feedback_fill(native_backend):
    op = native_backend.library().feedback_fill_
    for dtype in (torch.float32, torch.float64):
        for shape in ((1, 1), (7, 33), (33, 7)):
            out = torch.empty(shape, dtype=dtype, device=native_backend.device)
            torch.library.opcheck(op, (out, 3, "normal", 0.5))
