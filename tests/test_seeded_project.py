"""seeded_project: x @ F without F, against the reference, autograd, memory and errors."""

import subprocess
import sys
import textwrap

import peak_memory
import pytest
import torch

import fastcredit
from fastcredit import reference

DISTS = ("uniform", "normal", "rademacher")
# (N, K, cols): sizes of 1, odd, and not multiples of the CPU (256) or CUDA (64 x 64 x 16) tiles
SHAPES = [(1, 1, 1), (7, 33, 1), (1, 1000, 7), (33, 7, 1000), (33, 257, 300), (1000, 33, 7)]
EMULATED_SHAPES = [(1, 1, 1), (7, 33, 1), (1, 17, 67), (67, 15, 33)]


def _shapes(backend):
    return EMULATED_SHAPES if backend.slow else SHAPES


def _x(n, k, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed + 1000 * n + k)
    return torch.randn(n, k, dtype=dtype, generator=generator)


@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("transpose", [False, True])
def test_equals_x_times_feedback_matrix_float64(native_backend, dist, transpose):
    for n, k, cols in _shapes(native_backend):
        x = _x(n, k).to(native_backend.device)
        got = native_backend.op("seeded_project")(x, 99, cols, dist=dist, scale=0.7, transpose=transpose)
        f = reference.feedback_matrix(
            99, *((cols, k) if transpose else (k, cols)), dist=dist, scale=0.7,
            dtype=torch.float64)
        want = x.cpu() @ (f.T if transpose else f)
        assert got.shape == (n, cols) and got.dtype == torch.float64
        torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12 * want.abs().max())


def test_reference_backend_agrees_with_explicit_matmul(backend):
    x = _x(5, 9)
    want = x @ fastcredit.feedback_matrix(3, 9, 11, dtype=torch.float64)
    torch.testing.assert_close(backend.op("seeded_project")(x.to(backend.device), 3, 11).cpu(), want,
                               rtol=1e-12, atol=1e-12)


def test_float32_close_to_float64(native_backend):
    n, k, cols = (9, 40, 70) if native_backend.slow else (50, 300, 270)
    x = _x(n, k)
    want = reference.seeded_project(x, 5, cols, dist="normal")
    got = native_backend.op("seeded_project")(x.float().to(native_backend.device), 5, cols,
                                        dist="normal")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.cpu().double(), want, rtol=1e-4, atol=1e-4 * k**0.5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(native_backend, dtype):
    # 2000 products summed in half precision would be off by several percent; float32
    # accumulation leaves only the output rounding.
    k = 300 if native_backend.slow else 2000
    x = _x(3, k).to(dtype)
    got = native_backend.op("seeded_project")(x.to(native_backend.device), 8, 5).cpu()
    assert got.dtype == dtype
    want = (x.float() @ fastcredit.feedback_matrix(8, k, 5)).to(dtype)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(got.float(), want.float(), rtol=2 * eps, atol=2 * eps)


def test_non_contiguous_inputs(native_backend):
    base = _x(40, 50)
    for x in (base.T, base[::3, 1::2], base[:, :17], base[5:6].expand(7, 50)):
        got = native_backend.op("seeded_project")(x.to(native_backend.device), 4, 19)
        want = x @ reference.feedback_matrix(4, x.shape[1], 19, dtype=torch.float64)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)


def test_empty_dimensions(native_backend):
    project = native_backend.op("seeded_project")
    assert project(_x(0, 5), 1, 4).shape == (0, 4)
    assert project(_x(3, 5), 1, 0).shape == (3, 0)
    zero_k = project(_x(3, 0), 1, 4)
    assert zero_k.shape == (3, 4) and torch.count_nonzero(zero_k) == 0


def test_same_seed_same_result_across_thread_counts():
    x = _x(64, 700).float()
    first = fastcredit.seeded_project(x, 1, 600)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = fastcredit.seeded_project(x, 1, 600)
    finally:
        torch.set_num_threads(previous)
    # the GEMM library may split sums differently per thread count: equal to float rounding
    torch.testing.assert_close(single, first, rtol=1e-5, atol=1e-5)


def test_gradient_is_grad_times_feedback_transposed():
    x = _x(6, 13).requires_grad_()
    out = fastcredit.seeded_project(x, 21, 10, dist="normal")
    grad_out = _x(6, 10, seed=1)
    (grad_x,) = torch.autograd.grad(out, x, grad_out)
    f = fastcredit.feedback_matrix(21, 13, 10, dist="normal", dtype=torch.float64)
    torch.testing.assert_close(grad_x, grad_out @ f.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("transpose", [False, True])
def test_gradcheck(native_backend, transpose):
    project = native_backend.op("seeded_project")
    x = _x(4, 7).to(native_backend.device).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: project(t, 3, 5, dist="rademacher", transpose=transpose), (x,)
    )
    assert torch.autograd.gradgradcheck(lambda t: project(t, 3, 5, transpose=transpose), (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(native_backend, dtype):
    op = native_backend.library().seeded_project
    for n, k, cols in [(1, 1, 1), (7, 33, 5), (33, 5, 70)]:
        for transpose in (False, True):
            x = _x(n, k, dtype=dtype).to(native_backend.device).requires_grad_()
            torch.library.opcheck(op, (x, 12, cols, "normal", 0.5, transpose))


def test_peak_memory_is_a_tile_not_the_matrix():
    # F here would be 1024 x 262144 float32 = 1 GiB; the op may use a few MiB of tiles.
    script = peak_memory.PRELUDE + textwrap.dedent(
        """
        import torch, fastcredit
        x = torch.randn(2, 1024)
        fastcredit.seeded_project(x, 1, 8)  # warm up allocator, threads, BLAS
        reset_peak()
        before = peak_mib()
        out = fastcredit.seeded_project(x, 1, 262144)
        print(peak_mib() - before)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    growth_mib = int(result.stdout.strip().splitlines()[-1])
    assert growth_mib < 64, f"peak RSS grew by {growth_mib} MiB"
    # the measurement sees a materialised matrix: 1 GiB would be visible
    baseline = subprocess.run([sys.executable, "-c", script.replace(
        "fastcredit.seeded_project(x, 1, 262144)",
        "x @ fastcredit.feedback_matrix(1, 1024, 262144)")], capture_output=True, text=True,
        check=True)
    assert int(baseline.stdout.strip().splitlines()[-1]) > 900


# ---- column tiles beyond the grid limit ---------------------------------------------------------
# The CUDA kernel puts column tiles (64 columns) on grid.y, capped at 65535 blocks, and loops over
# the rest; FC_EMU_MAX_GRID_Y lowers that cap in emulation so small shapes reach the loop.
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("max_grid_y", ["1", "2"])
def test_emulated_loops_over_column_tiles_past_the_grid_limit(monkeypatch, max_grid_y, transpose):
    import backends

    emulated = backends.get("cuda_emulated").op("seeded_project")
    x = _x(5, 19)
    monkeypatch.setenv("FC_EMU_MAX_GRID_Y", max_grid_y)
    cols = 5 * 64 + 3  # 6 column tiles, the last one partial
    got = emulated(x, 4, cols, dist="normal", scale=0.5, transpose=transpose)
    want = fastcredit.seeded_project(x, 4, cols, dist="normal", scale=0.5, transpose=transpose)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_accepts_more_cols_than_grid_y_times_the_tile_on_every_backend(monkeypatch):
    import backends

    monkeypatch.setenv("FC_EMU_MAX_GRID_Y", "7")  # the emulator runs one block at a time
    cols = 65535 * 64 + 65  # was CUDA's limit, plus two column tiles
    x = torch.zeros(1, 0)  # K = 0: every output is 0, no generation, fast even emulated
    for native in ("cpu", "cuda_emulated"):
        out = backends.get(native).op("seeded_project")(x, 1, cols)
        assert out.shape == (1, cols) and torch.equal(out, torch.zeros(1, cols)), native


# ---- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("native", ["cpu", "cuda_emulated"])
def test_rejects_bad_inputs_with_named_problem(native):
    import backends

    project = backends.get(native).op("seeded_project")
    with pytest.raises(RuntimeError, match=r"x must be 2-D \[N, K\], got 3-D"):
        project(torch.zeros(2, 3, 4), 0, 5)
    with pytest.raises(RuntimeError, match="x must be float32, float64, float16 or bfloat16"):
        project(torch.zeros(2, 3, dtype=torch.int64), 0, 5)
    with pytest.raises(RuntimeError, match="scale must be finite"):
        project(torch.zeros(2, 3), 0, 5, scale=float("inf"))
    # the Python wrapper raises ValueError, the op boundary RuntimeError: same message
    with pytest.raises((RuntimeError, ValueError), match="unknown dist 'cauchy'"):
        project(torch.zeros(2, 3), 0, 5, dist="cauchy")


def test_python_wrapper_rejects_bad_arguments():
    with pytest.raises(ValueError, match="cols must be non-negative, got -2"):
        fastcredit.seeded_project(torch.zeros(2, 3), 0, -2)
    with pytest.raises(RuntimeError, match="cols must be non-negative, got -2"):
        torch.ops.fastcredit.seeded_project(torch.zeros(2, 3), 0, -2, "uniform", 1.0, False)
    with pytest.raises(ValueError, match="unknown dist 'cauchy'"):
        fastcredit.seeded_project(torch.zeros(2, 3), 0, 5, dist="cauchy")
