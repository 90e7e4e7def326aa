"""The CI check that guards CPU/GPU bit identity (.ci/check_fp64_ptx.py), on hand-written PTX."""

import importlib.util
import shutil
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "check_fp64_ptx.py"
if not SCRIPT.exists():  # an sdist ships no .ci/: the check belongs to the repository's CI
    pytest.skip(".ci/ is not part of this tree", allow_module_level=True)
spec = importlib.util.spec_from_file_location("check_fp64_ptx", SCRIPT)
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)

pytestmark = pytest.mark.skipif(shutil.which("c++filt") is None, reason="needs c++filt")

FILL = "_ZN10fastcredit4cuda20feedback_fill_kernelIfEEvPT_llllmNS_4DistEd"
PROJECT_DOUBLE = "_ZN10fastcredit4cuda21seeded_project_kernelIdEEvPKT_llllPS2_lmNS_4DistEdb"


def _ptx(name, *instructions):
    return f".visible .entry {name}(\n)\n{{\n" + "".join(f"\t{i};\n" for i in instructions) + "}\n"


def _problems(ptx):
    return {name.split("(")[0]: problems for name, problems in check.violations(ptx)}


def test_rounded_and_exact_power_of_two_operations_pass():
    ptx = _ptx(FILL, "mul.rn.f64 %fd1, %fd2, %fd3", "add.rn.f64 %fd4, %fd1, 0d3FF0000000000000",
               "mul.f64 %fd5, %fd4, 0d3E70000000000000", "fma.rn.f32 %f1, %f2, %f3, %f4")
    assert _problems(ptx) == {"void fastcredit::cuda::feedback_fill_kernel<float>": []}


@pytest.mark.parametrize("instruction", [
    "fma.rn.f64 %fd1, %fd2, %fd3, %fd4",
    "mad.rn.f64 %fd1, %fd2, %fd3, %fd4",
    "mul.f64 %fd1, %fd2, %fd3",                  # may be contracted with a following add
    "mul.f64 %fd1, %fd2, 0d3FB999999999999A",    # 0.1: not a power of two
    "add.f64 %fd1, %fd2, %fd3",
    "@%p1 sub.f64 %fd1, %fd2, %fd3",
])
def test_fused_or_contractible_fp64_fails(instruction):
    (problems,) = _problems(_ptx(FILL, instruction)).values()
    assert len(problems) == 1


def test_double_projection_may_fuse_its_matrix_product():
    assert _problems(_ptx(PROJECT_DOUBLE, "fma.rn.f64 %fd1, %fd2, %fd3, %fd4")) == {}
