"""sign_feedback: scale * |M| ⊙ sign(W) against the reference, sign(0), brSF's per-step seeds,
opcheck, autograd and errors."""

import pytest
import torch

import fastcredit
from fastcredit import reference

DISTS = ("uniform", "normal", "rademacher")
# Linear [out, in] and conv [out, in/groups, *kernel] shapes; rows * cols not a multiple of 4
SHAPES = [(1, 1), (7, 33), (67, 5), (6, 2, 3), (5, 3, 2, 3), (4, 1, 3, 1, 2)]
EMULATED_SHAPES = [(1, 1), (7, 33), (5, 3, 2, 3)]


def _weight(shape, dtype=torch.float64, seed=0):
    w = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    w.view(-1)[::7] = 0.0  # exact zeros: sign(0) = 0 must hold wherever they fall
    return w.to(dtype)


def _mode_kwargs(mode, weight):
    if mode == "stored":
        return {"magnitude": torch.randn_like(weight)}
    if mode == "seeded":
        return {"seed": 2**64 - 5}  # a seed that is negative as int64
    if mode == "seeded_step":
        return {"seed": 42, "step": 3}
    return {}


def _assert_same(got, want, dist):
    if dist == "normal":  # the kernels' own log/sin/cos vs libm's in the reference: ~1e-15
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
    else:
        assert torch.equal(got, want)


@pytest.mark.parametrize("mode", reference.SIGN_FEEDBACK_MODES)
@pytest.mark.parametrize("dist", DISTS)
def test_equals_reference_float64(native_backend, mode, dist):
    for shape in EMULATED_SHAPES if native_backend.slow else SHAPES:
        w = _weight(shape).to(native_backend.device)
        kwargs = _mode_kwargs(mode, w)
        got = native_backend.op("sign_feedback")(w, mode, scale=0.37, dist=dist, **kwargs)
        want = reference.sign_feedback(w, mode, scale=0.37, dist=dist, **kwargs)
        assert got.shape == w.shape and got.dtype == w.dtype and got.is_contiguous()
        _assert_same(got.cpu(), want.cpu(), dist)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", reference.SIGN_FEEDBACK_MODES)
def test_lower_precisions_are_bit_exact(native_backend, dtype, mode):
    w = _weight((9, 3, 5), dtype=dtype)
    kwargs = _mode_kwargs(mode, w)
    got = native_backend.op("sign_feedback")(w, mode, scale=0.3, **kwargs)
    assert got.dtype == dtype
    assert torch.equal(got, reference.sign_feedback(w, mode, scale=0.3, **kwargs))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_cpu_and_emulated_cuda_kernels_agree_bit_for_bit(dtype):
    import backends

    cpu, emulated = backends.get("cpu"), backends.get("cuda_emulated")
    w = _weight((17, 3, 3), dtype=dtype)  # 153 entries: vector packs and a scalar tail
    for mode in reference.SIGN_FEEDBACK_MODES:
        kwargs = _mode_kwargs(mode, w)
        a = cpu.op("sign_feedback")(w, mode, scale=0.5, dist="normal", **kwargs)
        b = emulated.op("sign_feedback")(w, mode, scale=0.5, dist="normal", **kwargs)
        assert torch.equal(a, b), mode


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_emulated_half_precision_rounds_the_magnitude_first(dtype):
    import backends

    # |m| * scale overflows to inf in the storage type, so a zero weight gives inf * 0 = NaN,
    # as when computing in that type; finite magnitudes keep their sign rules.
    big = torch.finfo(dtype).max
    w = torch.tensor([[0.0, 1.0, -2.0, 0.0]], dtype=dtype)
    m = torch.tensor([[big, big, 3.0, 3.0]], dtype=dtype)
    for native in ("cpu", "cuda_emulated"):
        got = backends.get(native).op("sign_feedback")(w, "stored", scale=4.0, magnitude=m)
        assert torch.isnan(got[0, 0]) and got[0, 1] == float("inf"), native
        assert got[0, 2:].tolist() == [-12.0, 0.0], native


def test_sign_of_zero_is_zero_and_nan_propagates(native_backend):
    w = torch.tensor([[2.0, -3.0, 0.0, -0.0, float("nan")]], dtype=torch.float64)
    magnitude = torch.tensor([[-0.5, 0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    op = native_backend.op("sign_feedback")
    got = op(w, "stored", scale=2.0, magnitude=magnitude)
    assert got[0, :4].tolist() == [1.0, -1.0, 0.0, 0.0]
    assert torch.isnan(got[0, 4])
    assert op(w, "scalar", scale=0.25)[0, :4].tolist() == [0.25, -0.25, 0.0, 0.0]
    seeded = op(w, "seeded", seed=3)[0]
    assert seeded[0] > 0 and seeded[1] < 0 and seeded[2] == 0 and seeded[3] == 0


def test_non_contiguous_weight_and_magnitude(native_backend):
    base = _weight((12, 10))
    op = native_backend.op("sign_feedback")
    for w in (base.T, base[::2, 1::3], base.view(4, 3, 10).permute(1, 2, 0)):
        magnitude = torch.randn(w.shape[::-1], dtype=w.dtype).transpose(0, -1)
        for mode, kwargs in [("stored", {"magnitude": magnitude}), ("seeded", {"seed": 9})]:
            got = op(w, mode, scale=1.5, **kwargs)
            want = reference.sign_feedback(w.contiguous(), mode, scale=1.5, **kwargs)
            assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unaligned_views_and_ragged_tails(native_backend, dtype):
    # 16-byte packs when every pointer allows them, single entries otherwise (see the kernel).
    op = native_backend.op("sign_feedback")
    for rows, cols in ((1, 1), (1, 3), (7, 33)):
        w = _weight((rows * cols + 1,), dtype).reshape(-1)
        m = torch.randn(rows * cols + 1, dtype=dtype)
        for start_w, start_m in ((0, 0), (1, 1), (0, 1)):
            weight = w[start_w:start_w + rows * cols].view(rows, cols)
            magnitude = m[start_m:start_m + rows * cols].view(rows, cols)
            for mode, kwargs in [("scalar", {}), ("stored", {"magnitude": magnitude})]:
                got = op(weight, mode, scale=1.5, **kwargs)
                assert torch.equal(got, reference.sign_feedback(weight, mode, scale=1.5, **kwargs))


def test_seeded_magnitudes_are_the_feedback_matrix_on_the_flattened_kernel(native_backend):
    w = _weight((6, 2, 3, 3))
    got = native_backend.op("sign_feedback")(w, "seeded", scale=0.2, seed=77)
    f = fastcredit.feedback_matrix(77, 6, 18, scale=0.2, dtype=torch.float64).view(w.shape)
    assert torch.equal(got, f.abs() * torch.sign(w))


def test_seeded_step_is_seeded_at_the_step_seed(native_backend):
    w = _weight((5, 7))
    op = native_backend.op("sign_feedback")
    draws = [op(w, "seeded_step", seed=123, step=s) for s in range(4)]
    for s, draw in enumerate(draws):
        assert torch.equal(draw, op(w, "seeded", seed=reference.step_seed(123, s)))
        assert torch.equal(draw, op(w, "seeded_step", seed=123, step=s))  # same (seed, step)
    nonzero = w != 0
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.equal(draws[a][nonzero], draws[b][nonzero])
    assert torch.equal(torch.sign(draws[0]), torch.sign(w))


def test_step_seed_known_answer():
    # F(seed)'s Philox block at row 2**64 - 1, column group `step`: words 0 and 1 of
    # Philox4x32-10 at counter (step, 0, 2**32 - 1, 2**32 - 1) under key seed.
    words = reference.philox4x32_10(
        tuple(torch.tensor([c]) for c in (5, 0, 0xFFFFFFFF, 0xFFFFFFFF)), (7, 0))
    assert reference.step_seed(7, 5) == int(words[0]) | int(words[1]) << 32
    assert len({reference.step_seed(7, s) for s in range(1000)}) == 1000


def test_empty_weights(native_backend):
    op = native_backend.op("sign_feedback")
    for shape in [(0, 3), (3, 0), (2, 0, 3)]:
        for mode in ("scalar", "seeded"):
            assert op(torch.zeros(shape), mode).shape == shape


def test_magnitude_gradient(native_backend):
    op = native_backend.op("sign_feedback")
    w = _weight((3, 4))
    magnitude = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m: op(w, "stored", scale=0.7, magnitude=m),
                                    (magnitude,))
    weight = w.clone().requires_grad_()
    (grad_w,) = torch.autograd.grad(op(weight, "seeded", seed=1).sum(), weight,
                                    allow_unused=True)
    assert grad_w is None or torch.count_nonzero(grad_w) == 0  # B is piecewise constant in W


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(native_backend, dtype):
    op = native_backend.library().sign_feedback
    w = _weight((5, 3, 2), dtype=dtype)
    magnitude = torch.randn(5, 3, 2, dtype=dtype, requires_grad=True)
    for args in [(w, "scalar", 0.5), (w, "stored", 0.5, magnitude),
                 (w, "seeded", 0.5, None, -3, None, "normal"),
                 (w, "seeded_step", 0.5, None, 8, torch.tensor(2), "rademacher")]:
        torch.library.opcheck(op, args)


# ---- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("native", ["cpu", "cuda_emulated"])
def test_rejects_bad_inputs_with_named_problem(native):
    import backends

    op = backends.get(native).op("sign_feedback")
    w = torch.zeros(3, 4)
    errors = (RuntimeError, ValueError)
    with pytest.raises(errors, match=r"weight must have at least 2 dims .* got 1-D"):
        op(torch.zeros(4), "scalar")
    with pytest.raises(errors, match="weight must be float32, float64, float16 or bfloat16"):
        op(torch.zeros(3, 4, dtype=torch.int32), "scalar")
    with pytest.raises(errors, match="unknown mode 'random'"):
        op(w, "random")
    with pytest.raises(errors, match="mode 'stored' needs a magnitude tensor"):
        op(w, "stored")
    with pytest.raises(errors, match=r"magnitude must have weight's shape \[3, 4\], got \[4, 3\]"):
        op(w, "stored", magnitude=torch.zeros(4, 3))
    with pytest.raises(errors, match="magnitude must have weight's dtype Float, got Double"):
        op(w, "stored", magnitude=torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(errors, match="magnitude tensor is only read in mode 'stored'"):
        op(w, "seeded", magnitude=torch.zeros(3, 4))
    with pytest.raises(errors, match="scale must be finite"):
        op(w, "scalar", scale=float("nan"))
    with pytest.raises(errors, match="unknown dist 'cauchy'"):
        op(w, "seeded", dist="cauchy")
    with pytest.raises(errors, match="step must be non-negative, got -1"):
        op(w, "seeded_step", step=-1)


def test_op_boundary_rejects_negative_step_without_the_wrapper():
    with pytest.raises(RuntimeError, match="step must be non-negative, got -1"):
        torch.ops.fastcredit.sign_feedback(torch.zeros(2, 2), "seeded_step", 1.0, None, 0,
                                           torch.tensor(-1), "uniform")
