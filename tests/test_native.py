"""Runs the native (no torch) tests of the RNG and activation headers, compiled here with the
host compiler."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _build_and_run(tmp_path, name):
    binary = tmp_path / name
    subprocess.run(
        ["g++", "-std=c++20", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror",
         "-Wno-unknown-pragmas", f"-I{ROOT / 'csrc'}", str(ROOT / f"tests/native/{name}.cpp"),
         "-o", str(binary)],
        check=True,
    )
    result = subprocess.run([str(binary)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "all passed" in result.stdout


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_native_philox_known_answers_and_tiles(tmp_path):
    _build_and_run(tmp_path, "test_philox")


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_native_activation_derivatives_match_their_functions(tmp_path):
    _build_and_run(tmp_path, "test_activations")
