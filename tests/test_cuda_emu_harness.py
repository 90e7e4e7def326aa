"""The CUDA emulation header (tests/cuda_emu/cuda_emu.h) checked against itself.

tests/cuda_emu/selftest/ holds a shared-memory tiled matmul and a shuffle + shared-memory block
reduction written as plain CUDA C++, with bugs planted by -D macros. Every variant is compiled
once per session with the host compiler ($CXX, default g++) and run as a subprocess: correct
kernels must give exact answers in fiber and thread mode, and each planted bug must be caught in
the way its test names (wrong results, the header's own abort, ASan, or TSan).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EMU = ROOT / "tests" / "cuda_emu"
KERNELS = EMU / "selftest" / "kernels.cuh"
DRIVER = EMU / "selftest" / "driver.cpp"
CXX = os.environ.get("CXX", "g++")

COMMON = ["-std=c++17", "-pthread", "-Wall", "-Wextra", f"-I{EMU}", f"-I{ROOT / 'csrc'}"]
MODES = {"fibers": ["-DFC_EMU_FIBERS"], "threads": []}
SANITIZERS = {
    None: ["-O2"],
    "asan": [
        "-O1",
        "-g",
        "-fno-omit-frame-pointer",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=undefined",
    ],
    "tsan": ["-O1", "-g", "-fsanitize=thread"],
}
BUGS = {
    "a": "FC_BUG_NO_SYNC_AFTER_LOAD",
    "b": "FC_BUG_NO_SYNC_AFTER_COMPUTE",
    "c": "FC_BUG_BARRIER_IN_WARP0",
    "c2": "FC_BUG_BARRIER_TWO_SITES",
    "d": "FC_BUG_SHFL_AFTER_RETURN",
    "e": "FC_BUG_SHFL_IN_HALF_WARP",
    "f": "FC_BUG_SHARED_ONE_SHORT",
    "f2": "FC_BUG_READ_UNWRITTEN_SHARED",
    "g": "FC_BUG_1025_THREADS",
}
# (mode, bug, sanitizer) of every build the tests below use, compiled in parallel up front.
PLAIN_BUILDS = (
    [(m, None, None) for m in MODES]
    + [
        ("threads", "a", None),
        ("threads", "b", None),
        ("fibers", "f2", None),
        ("fibers", "g", None),
    ]
    + [(m, bug, None) for m in MODES for bug in ("c", "c2", "d", "e")]
)
SANITIZER_BUILDS = {
    "asan": [("fibers", None, "asan"), ("fibers", "f", "asan")],
    "tsan": [("threads", None, "tsan"), ("threads", "a", "tsan"), ("threads", "b", "tsan")],
}
SIGABRT = -6


class Builds:
    """Compiles driver.cpp variants in a thread pool, each at most once per session."""

    def __init__(self, outdir: Path):
        self.outdir = outdir
        self.pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
        self.futures: dict[tuple, Future] = {}

    def submit(self, mode: str, bug: str | None = None, sanitizer: str | None = None) -> Future:
        key = (mode, bug, sanitizer)
        if key not in self.futures:
            self.futures[key] = self.pool.submit(self._compile, *key)
        return self.futures[key]

    def get(self, mode: str, bug: str | None = None, sanitizer: str | None = None) -> Path:
        exe, _ = self.submit(mode, bug, sanitizer).result()
        return exe

    def warnings(self, mode: str) -> str:
        return self.submit(mode).result()[1]

    def _compile(self, mode, bug, sanitizer):
        exe = self.outdir / "-".join(x for x in (mode, bug, sanitizer) if x)
        cmd = [CXX, *COMMON, *SANITIZERS[sanitizer], *MODES[mode]]
        cmd += [f"-D{BUGS[bug]}"] if bug else []
        cmd += [str(DRIVER), "-o", str(exe)]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"compiling {exe.name} failed:\n{' '.join(cmd)}\n{proc.stderr}")
        return exe, proc.stderr


@pytest.fixture(scope="session")
def builder(tmp_path_factory):
    if shutil.which(CXX) is None:
        pytest.skip(f"no host C++ compiler ({CXX})")
    b = Builds(tmp_path_factory.mktemp("cuda_emu"))
    yield b
    b.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def builds(builder):
    for key in PLAIN_BUILDS:  # start them all: they compile in parallel while tests run
        builder.submit(*key)
    return builder


def _sanitizer_usable(tmp_path_factory, sanitizer: str) -> str | None:
    """None if CXX can build and run a threaded program with the sanitizer, else why not."""
    src = tmp_path_factory.mktemp(f"probe-{sanitizer}") / "probe.cpp"
    src.write_text("#include <thread>\nint main() { std::thread([] {}).join(); }\n")
    exe = src.with_suffix("")
    proc = subprocess.run(
        [CXX, "-std=c++17", "-pthread", *SANITIZERS[sanitizer], str(src), "-o", str(exe)],
        check=False,
        capture_output=True,
        text=True,
    )
    if proc.returncode == 0:
        proc = subprocess.run([str(exe)], check=False, capture_output=True, text=True, timeout=60)
    return None if proc.returncode == 0 else proc.stderr.strip()[-500:] or "failed"


def _sanitizer_builds(builder, tmp_path_factory, sanitizer):
    why = _sanitizer_usable(tmp_path_factory, sanitizer)
    if why:
        pytest.skip(f"{CXX} cannot build and run with {sanitizer}: {why}")
    for key in SANITIZER_BUILDS[sanitizer]:
        builder.submit(*key)
    return builder


@pytest.fixture(scope="session")
def asan_builds(builder, tmp_path_factory):
    return _sanitizer_builds(builder, tmp_path_factory, "asan")


@pytest.fixture(scope="session")
def tsan_builds(builder, tmp_path_factory):
    return _sanitizer_builds(builder, tmp_path_factory, "tsan")


def run(exe: Path, *args: str) -> subprocess.CompletedProcess:
    # `ulimit -c 0`: the abort tests should not leave core dumps behind.
    cmd = ["sh", "-c", 'ulimit -c 0; exec "$0" "$@"', str(exe), *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)


def kernel_line(text: str) -> int:
    """Line number in kernels.cuh of the (unique) line containing `text`."""
    lines = [i for i, line in enumerate(KERNELS.read_text().splitlines(), 1) if text in line]
    assert len(lines) == 1, text
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Correct kernels


@pytest.mark.parametrize("dtype", ["float", "double"])
@pytest.mark.parametrize("kernel", ["matmul", "reduce"])
@pytest.mark.parametrize("mode", MODES)
def test_correct_kernels_give_exact_results(builds, mode, kernel, dtype):
    proc = run(builds.get(mode), kernel, dtype, "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("OK")


@pytest.mark.parametrize("mode", MODES)
def test_warp_and_block_intrinsics_follow_cuda_semantics(builds, mode):
    proc = run(builds.get(mode), "warp")
    assert proc.returncode == 0 and "FAIL" not in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", MODES)
def test_launches_beyond_gpu_limits_fail_without_running(builds, mode):
    proc = run(builds.get(mode), "launch")
    assert proc.returncode == 0 and "FAIL" not in proc.stdout, proc.stdout + proc.stderr


def test_fiber_mode_runs_a_64x64_matmul_of_16_blocks(builds):
    proc = run(builds.get("fibers"), "bench")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(proc.stdout)


@pytest.mark.parametrize("mode", MODES)
def test_header_compiles_without_warnings(builds, mode):
    assert builds.warnings(mode) == ""


# ---------------------------------------------------------------------------------------------
# Planted bugs


@pytest.mark.parametrize("bug", ["a", "b"])
def test_missing_barrier_gives_wrong_results_in_thread_mode(builds, bug):
    # A real race, so not deterministic in principle: three launches, at least one must be
    # wrong. (Measured: 30 of 30 single launches wrong for both bugs.)
    proc = run(builds.get("threads", bug), "matmul", "float", "3")
    assert proc.returncode == 1 and "MISMATCH" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", MODES)
def test_barrier_inside_warp0_branch_aborts(builds, mode):
    proc = run(builds.get(mode, "c"), "reduce", "double")
    assert proc.returncode == SIGABRT, proc.stdout + proc.stderr
    assert re.search(
        r"fc_emu: barrier divergence: thread \(\d+,0,0\) "
        r"(exited while \d+ thread\(s\) wait at __syncthreads|"
        r"reached __syncthreads at \S+kernels\.cuh:\d+ after thread \(\d+,0,0\) exited)",
        proc.stderr,
    ), proc.stderr


@pytest.mark.parametrize("mode", MODES)
def test_barriers_at_two_call_sites_abort(builds, mode):
    proc = run(builds.get(mode, "c2"), "reduce", "double")
    assert proc.returncode == SIGABRT, proc.stdout + proc.stderr
    m = re.search(
        r"barrier divergence: thread \S+ reached __syncthreads at \S+kernels\.cuh:(\d+) "
        r"while \d+ thread\(s\) wait at __syncthreads at \S+kernels\.cuh:(\d+)",
        proc.stderr,
    )
    assert m and m.group(1) != m.group(2), proc.stderr


@pytest.mark.parametrize("mode", MODES)
def test_full_mask_shuffle_after_early_return_aborts(builds, mode):
    proc = run(builds.get(mode, "d"), "reduce", "double")
    assert proc.returncode == SIGABRT, proc.stdout + proc.stderr
    line = kernel_line("__shfl_down_sync")
    assert re.search(
        rf"warp collective error: (lane \d+ of warp \d+ waits at __shfl_down_sync at "
        rf"\S+kernels\.cuh:{line} \(mask 0xffffffff\) for lane \d+, which exited|"
        rf"__shfl_down_sync at \S+kernels\.cuh:{line} \(mask 0xffffffff\): lane \d+ of "
        rf"warp \d+ has exited)",
        proc.stderr,
    ), proc.stderr


@pytest.mark.parametrize("mode", MODES)
def test_full_mask_shuffle_in_half_warp_aborts(builds, mode):
    proc = run(builds.get(mode, "e"), "reduce", "double")
    assert proc.returncode == SIGABRT, proc.stdout + proc.stderr
    line = kernel_line("__shfl_down_sync")
    assert re.search(
        rf"warp collective error: lane \d+ of warp \d+ waits at __shfl_down_sync at "
        rf"\S+kernels\.cuh:{line} \(mask 0xffffffff\) for lane \d+, which reached "
        rf"__syncthreads at",
        proc.stderr,
    ), proc.stderr


def test_unwritten_dynamic_shared_memory_reads_as_nan(builds):
    proc = run(builds.get("fibers", "f2"), "reduce", "double")
    assert proc.returncode == 1 and re.search(r"MISMATCH reduce .*got -?nan", proc.stdout), (
        proc.stdout + proc.stderr
    )


def test_launch_with_1025_threads_returns_an_error(builds):
    proc = run(builds.get("fibers", "g"), "reduce", "double")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (
        "CUDA error: invalid configuration argument (cudaErrorInvalidConfiguration)" in proc.stdout
    )
    assert "1025 threads" in proc.stdout


MISUSE = {  # driver.cpp's misuse_kernel cases (and one host call) -> expected message
    "absent": (
        r"__syncwarp at \S+driver\.cpp:\d+: mask 0xffffffff names absent lanes 16\.\.31 "
        r"of warp 1, which has 16 lane\(s\)"
    ),
    "notinmask": r"__shfl_sync at \S+: calling lane 0 of warp 0 is not in its mask 0xfffffffe",
    "masks": r"lanes \d and \d of warp 0 reached __syncwarp at \S+ with different masks",
    "crossed": (
        r"lanes \d and \d of warp 0 wait for each other at different collectives: "
        r"__(ballot_sync|syncwarp) at"
    ),
    "readout": r"__shfl_sync at \S+: lane \d of warp 0 reads lane 5, which is not in mask 0x0+3",
    "cycle": (
        r"deadlock: every live thread waits and none can proceed:\n"
        r"(  1 thread\(s\) from \(\d,0,0\) wait at __syncwarp at \S+ "
        r"\(warp 0, mask 0x0000000[356]\)\n){3}"
    ),
    "outside": r"__syncthreads called outside a kernel",
}


@pytest.mark.parametrize("case", MISUSE)
@pytest.mark.parametrize("mode", MODES)
def test_misused_intrinsics_abort_with_a_clear_message(builds, mode, case):
    proc = run(builds.get(mode), "misuse", case)
    assert proc.returncode == SIGABRT, proc.stdout + proc.stderr
    assert re.search("fc_emu: .*" + MISUSE[case], proc.stderr), proc.stderr


# ---------------------------------------------------------------------------------------------
# Sanitizer builds


@pytest.mark.sanitizer
@pytest.mark.parametrize("what", ["matmul float", "reduce double", "warp", "launch"])
def test_asan_ubsan_fiber_build_runs_correct_kernels_cleanly(asan_builds, what):
    proc = run(asan_builds.get("fibers", None, "asan"), *what.split())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ERROR: AddressSanitizer" not in proc.stderr and "runtime error" not in proc.stderr


@pytest.mark.sanitizer
def test_asan_catches_dynamic_shared_memory_one_element_short(asan_builds):
    # The plain build usually passes silently: the overflow lands in malloc's slack.
    proc = run(asan_builds.get("fibers", "f", "asan"), "reduce", "float")
    assert proc.returncode != 0
    line = kernel_line("warp_sums[warp] = v")
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in proc.stderr, proc.stderr
    assert re.search(rf"#0 .*block_sum_kernel.*kernels\.cuh:{line}", proc.stderr), proc.stderr


@pytest.mark.sanitizer
@pytest.mark.parametrize("what", ["matmul float", "reduce double", "warp"])
def test_tsan_thread_build_runs_correct_kernels_without_reports(tsan_builds, what):
    proc = run(tsan_builds.get("threads", None, "tsan"), *what.split())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ThreadSanitizer" not in proc.stderr, proc.stderr


@pytest.mark.sanitizer
@pytest.mark.parametrize("bug", ["a", "b"])
def test_tsan_names_the_racing_lines_of_a_missing_barrier(tsan_builds, bug):
    proc = run(tsan_builds.get("threads", bug, "tsan"), "matmul", "float")
    assert proc.returncode == 66, proc.stdout + proc.stderr  # TSan's exit code after reports
    assert "WARNING: ThreadSanitizer: data race" in proc.stderr
    stores = {kernel_line("a_tile[ty][tx] ="), kernel_line("b_tile[ty][tx] =")}
    reported = {
        int(n) for n in re.findall(r"#0 .*matmul_tiled_kernel.*kernels\.cuh:(\d+)", proc.stderr)
    }
    assert kernel_line("acc +=") in reported and reported & stores, proc.stderr
