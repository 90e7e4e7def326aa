"""The extension's build: what build_info() reports, dispatcher registration, the CLI."""

import json
import subprocess
import sys

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


def test_import_warns_when_torch_minor_version_differs():
    script = (
        "import warnings, torch\n"
        "torch.__version__ = '1.0.0'\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import fastcredit\n"
        "print([str(w.message) for w in caught])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    assert "but is running under torch 1.0.0" in out


def test_cli_info_json_matches_build_info():
    out = subprocess.run([sys.executable, "-m", "fastcredit", "info", "--json"],
                         capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    assert info["version"] == fastcredit.__version__
    assert info["with_cuda"] == fastcredit.build_info()["with_cuda"]
