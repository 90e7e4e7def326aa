"""The extension's build: what build_info() reports, dispatcher registration, the CLI."""

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools
import torch
from torch.utils import cpp_extension

import fastcredit

OPS = ("feedback_fill_", "seeded_project", "dfa_backward_epilogue")


def _registered_keys(op: str) -> str:
    return torch._C._dispatch_dump(f"fastcredit::{op}")


def test_build_info_reports_this_build():
    info = fastcredit.build_info()
    assert info["version"] == fastcredit.__version__
    assert info["torch_version"] == torch.__version__  # built against the torch that runs
    assert info["torch_runtime_version"] == torch.__version__
    assert fastcredit._build_info.TORCH_VERSION == info["torch_version"]  # read before _C loads
    assert info["cuda_version"] == (torch.version.cuda if info["with_cuda"] else "")
    assert info["cuda_kernels_loaded"] == fastcredit.cuda_kernels_available()
    assert info["intra_op_threads"] == torch.get_num_threads()
    assert isinstance(info["openmp"], bool) and info["openmp_max_threads"] >= 1
    if info["with_cuda"]:
        assert torch.version.cuda is not None
        assert info["cuda_archs"]
    else:
        assert info["cuda_archs"] == ""
        assert not fastcredit.cuda_kernels_available()


@pytest.mark.parametrize("op", OPS)
def test_ops_have_cpu_and_meta_kernels_and_cuda_exactly_when_built(op):
    dump = _registered_keys(op)
    assert "\nCPU: registered" in dump
    assert "\nMeta: registered" in dump
    assert ("\nCUDA: registered" in dump) == fastcredit.cuda_kernels_available()


@pytest.mark.cuda_build
@pytest.mark.skipif(not fastcredit.build_info()["with_cuda"], reason="CPU-only build")
def test_cuda_build_registers_cuda_kernels_and_keeps_cpu_ops_right():
    assert fastcredit.cuda_kernels_available(), fastcredit.build_info().get("cuda_kernels_error")
    for op in OPS:
        assert "\nCUDA: registered" in _registered_keys(op)
    assert torch.equal(fastcredit.feedback_matrix(3, 9, 10),
                       fastcredit.reference.feedback_matrix(3, 9, 10))
    # fake tensors trace CUDA shapes without a device
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        out = fastcredit.seeded_project(torch.empty(4, 8, device="cuda"), 1, 3)
        assert out.shape == (4, 3) and out.device.type == "cuda"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="NVIDIA driver|no CUDA GPUs|CUDA"):
            fastcredit.feedback_matrix(1, 2, 2, device="cuda")


def _import_copy_recording(tmp_path, recorded_torch: str | None):
    """Imports a copy of the built package whose _build_info.py records recorded_torch (None:
    no _build_info.py, as in a tree that was never built)."""
    package = tmp_path / "fastcredit"
    shutil.copytree(Path(fastcredit.__file__).parent, package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (package / "_build_info.py").unlink()
    if recorded_torch is not None:
        (package / "_build_info.py").write_text(f"TORCH_VERSION = {recorded_torch!r}\n")
    script = (
        "import sys\n"
        "# an editable install's finder would serve modules missing from the copy\n"
        "sys.meta_path = [finder for finder in sys.meta_path\n"
        "                 if not getattr(finder, '__module__', '').startswith('__editable__')]\n"
        "import fastcredit\n"
        "print(fastcredit.__file__, fastcredit._C.__file__)\n"
    )
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True)


def test_import_under_another_torch_release_fails_naming_both(tmp_path):
    result = _import_copy_recording(tmp_path, "1.0.0")
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"ImportError: fastcredit was built against torch 1.0.0 but torch "
                            f"{torch.__version__} is installed.")
    assert "pip install --no-build-isolation" in error and "torch==1.0.*" in error


def test_import_accepts_a_build_for_another_patch_release(tmp_path):
    major, minor = torch.__version__.split(".")[:2]
    result = _import_copy_recording(tmp_path, f"{major}.{minor}.99+other")
    assert result.returncode == 0, result.stderr
    package_file, extension_file = result.stdout.split()
    assert Path(package_file).parent == Path(extension_file).parent == tmp_path / "fastcredit"


def test_import_of_an_unbuilt_tree_says_to_build_it(tmp_path):
    result = _import_copy_recording(tmp_path, None)
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("ImportError: fastcredit's extension is not built")
    assert "pip install --no-build-isolation" in error


def test_cli_info_json_matches_build_info():
    out = subprocess.run([sys.executable, "-m", "fastcredit", "info", "--json"],
                         capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    assert info["version"] == fastcredit.__version__
    assert info["with_cuda"] == fastcredit.build_info()["with_cuda"]
    # the releases the extension was built with
    assert info["torch_version"] == torch.__version__
    assert info["cuda_version"] == fastcredit.build_info()["cuda_version"]


SETUP_PY = Path(__file__).resolve().parent.parent / "setup.py"


def _run_setup_py(monkeypatch, env, *, torch_cuda=None, gpus=()):
    """Executes setup.py's module code (setup() itself a no-op) under `env` and a torch that
    claims CUDA version `torch_cuda` and visible GPUs `gpus`; returns (globals, environ)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("TORCH_CUDA_ARCH_LIST",
                                                                 "FASTCREDIT_CUDA")}
    environ.update(env)
    monkeypatch.setattr(os, "environ", environ)
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: None)
    monkeypatch.setattr(torch.version, "cuda", torch_cuda)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(gpus))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpus))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: gpus[i])
    return runpy.run_path(str(SETUP_PY), run_name="setup_under_test"), environ


def test_cpu_only_build_exports_no_cuda_arch_list(monkeypatch):
    namespace, environ = _run_setup_py(monkeypatch, {"FASTCREDIT_CUDA": "0"})
    assert not namespace["with_cuda"]
    assert namespace["cuda_archs"] == ""
    assert "TORCH_CUDA_ARCH_LIST" not in environ  # a later CUDA build would inherit it


def _cuda_build(monkeypatch, env=(), gpus=()):
    probe, _ = _run_setup_py(monkeypatch, {"FASTCREDIT_CUDA": "0"})
    if probe["cuda_home"] is None:
        pytest.skip("no CUDA toolkit: setup.py cannot plan a CUDA build here")
    # torch found no toolkit when it was imported under the CPU torch
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", probe["cuda_home"])
    namespace, environ = _run_setup_py(monkeypatch, {"FASTCREDIT_CUDA": "1", **dict(env)},
                                       torch_cuda="13.0", gpus=list(gpus))
    assert namespace["with_cuda"]
    return namespace, environ


def test_gpu_less_cuda_build_falls_back_to_sass_and_compute_90_ptx(monkeypatch):
    namespace, environ = _cuda_build(monkeypatch)
    archs = environ["TORCH_CUDA_ARCH_LIST"].split(";")
    # PTX for GPUs newer than the newest SASS (sm_100, sm_120); SASS for sm_75 to sm_90
    assert archs[-1] == "9.0+PTX" and {"7.5", "8.0"} <= set(archs)
    assert namespace["cuda_archs"] == environ["TORCH_CUDA_ARCH_LIST"]


def test_cuda_build_with_a_gpu_lets_torch_pick_archs(monkeypatch):
    namespace, environ = _cuda_build(monkeypatch, gpus=[(12, 0), (7, 5)])
    assert "TORCH_CUDA_ARCH_LIST" not in environ  # torch targets the visible GPUs itself
    assert namespace["cuda_archs"] == "visible GPUs: 7.5;12.0"


def test_cuda_build_keeps_the_users_arch_list(monkeypatch):
    _, environ = _cuda_build(monkeypatch, {"TORCH_CUDA_ARCH_LIST": "8.6"}, gpus=[(9, 0)])
    assert environ["TORCH_CUDA_ARCH_LIST"] == "8.6"
