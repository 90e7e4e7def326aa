"""Every CUDA kernel of csrc/cuda, executed through the emulation header by a native driver
(tests/native/test_cuda_kernels.cpp), in fiber and thread mode and under the sanitizers.

The Python-level op tests run the same kernels through fastcredit._C_emu (fiber mode); this
module adds what needs its own build: ASan+UBSan (out-of-bounds and uninitialised reads on the
exact-size, poisoned allocations) and TSan in thread mode (races between CUDA threads).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "native" / "test_cuda_kernels.cpp"
CXX = os.environ.get("CXX", "g++")
COMMON = ["-std=c++17", "-pthread", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror",
          "-Wno-unknown-pragmas", f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'tests' / 'cuda_emu'}"]
VARIANTS = {
    "fibers": ["-O2", "-DFC_EMU_FIBERS"],
    "threads": ["-O2"],
    "fibers-asan-ubsan": ["-O1", "-g", "-DFC_EMU_FIBERS", "-fno-omit-frame-pointer",
                          "-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
    "threads-tsan": ["-O1", "-g", "-fsanitize=thread"],
}

pytestmark = pytest.mark.skipif(shutil.which(CXX) is None, reason=f"needs {CXX}")


@pytest.mark.parametrize(
    "variant",
    [
        "fibers",
        "threads",
        pytest.param("fibers-asan-ubsan", marks=pytest.mark.sanitizer),
        pytest.param("threads-tsan", marks=pytest.mark.sanitizer),
    ],
)
def test_cuda_kernels_match_host_formulas(variant, tmp_path):
    exe = tmp_path / variant
    build = subprocess.run([CXX, *COMMON, *VARIANTS[variant], str(SOURCE), "-o", str(exe)],
                           capture_output=True, text=True)
    if build.returncode != 0 and "sanitizer" in build.stderr.lower() and "san" in variant:
        pytest.skip(f"{CXX} cannot build with this sanitizer: {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               TSAN_OPTIONS="halt_on_error=1", UBSAN_OPTIONS="print_stacktrace=1")
    run = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "all passed" in run.stdout
    for report in ("ERROR: AddressSanitizer", "runtime error:", "WARNING: ThreadSanitizer"):
        assert report not in run.stderr, run.stderr[-4000:]
