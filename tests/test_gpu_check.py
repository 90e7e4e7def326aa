"""benchmarks/gpu_check.sh and its timing script, where no GPU exists: the script must say so
and succeed, and every CPU-side path (timing loop, floors, report, JSON) must run."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
if not (ROOT / "benchmarks" / "gpu_check.py").exists():  # an sdist ships no benchmarks/
    pytest.skip("benchmarks/ is not part of this tree", allow_module_level=True)


def _gpu_check():
    if "gpu_check" not in sys.modules:  # dataclasses look their module up there
        spec = importlib.util.spec_from_file_location("gpu_check",
                                                      ROOT / "benchmarks/gpu_check.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_script_without_a_gpu_says_so_and_succeeds(tmp_path):
    for python in (sys.executable, "python-that-does-not-exist"):
        done = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), str(tmp_path)],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHON": python})
        assert (done.returncode, done.stdout) == (0, "no CUDA device\n"), done.stderr
    assert _gpu_check().main(["--out", str(tmp_path)]) == 0


def test_quick_cpu_run_writes_every_row_and_the_table(tmp_path, capsys):
    gpu_check = _gpu_check()
    assert gpu_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    names = [row["name"] for row in report["ops"]]
    assert len(names) == 9 and len(set(names)) == 9
    for row in report["ops"]:
        assert row["fused_us"] > 0 and row["composition_us"] > 0 and row["floor_us"] > 0
        assert row["speedup"] == pytest.approx(row["composition_us"] / row["fused_us"])
        assert row["roofline_h100_us"] is None  # estimates exist for the full shapes only
    steps = {(r["workload"], r["method"]): r for r in report["steps"]}
    assert {m for _, m in steps} == set(gpu_check.bench.METHODS)
    for (workload, method), row in steps.items():
        assert row["ratio_to_bp"] == pytest.approx(
            row["step_ms"] / steps[(workload, "bp")]["step_ms"])
    printed = capsys.readouterr().out
    assert all(name in printed for name in names)


def test_full_shapes_carry_the_roofline_estimates():
    gpu_check = _gpu_check()
    labels = {gpu_check._label(name, gpu_check.FULL) for name in (
        "seeded_project feature_map uniform", "seeded_project feature_map normal",
        "sign_feedback square scalar", "sign_feedback square stored",
        "sign_feedback square seeded_step", "lra_error batch x width tanh",
        "dfa_backward_epilogue batch x width tanh", "feedback_fill_ square uniform",
        "feedback_fill_ square normal")}
    assert labels == set(gpu_check.ROOFLINE_H100_US)


def test_mixed_device_verdict():
    ok = _gpu_check().mixed_device_ok
    assert ok({"a": "lra_error: pre_activation and displacement must be on the same device"})
    assert not ok({"a": "no error"})
    assert not ok({"a": "INTERNAL ASSERT FAILED at device_guard: report a bug to PyTorch"})
