"""Runs the native (no torch) tests of the RNG headers, compiled here with the host compiler."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_native_philox_known_answers_and_tiles(tmp_path):
    binary = tmp_path / "test_philox"
    subprocess.run(
        ["g++", "-std=c++20", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror",
         "-Wno-unknown-pragmas", f"-I{ROOT / 'csrc'}", str(ROOT / "tests/native/test_philox.cpp"),
         "-o", str(binary)],
        check=True,
    )
    result = subprocess.run([str(binary)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "all passed" in result.stdout
