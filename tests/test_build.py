"""The extension's build: what build_info() reports, dispatcher registration, the CLI."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
