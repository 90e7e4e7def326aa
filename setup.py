"""Builds fastcredit's extensions.

fastcredit._C       op schemas + CPU kernels (always).
fastcredit._C_cuda  CUDA kernels, when torch is a CUDA build and a CUDA toolkit is found;
                    FASTCREDIT_CUDA=0/1 forces it off/on.
fastcredit._C_emu   tests only, with FASTCREDIT_EMULATE_CUDA=1: the CUDA kernels compiled
                    by the host compiler through tests/cuda_emu/cuda_emu.h, run on the CPU.
FASTCREDIT_SANITIZE=1 builds _C under ASan+UBSan (CI's sanitizer run; build it in a separate
copy of the tree and load it with LD_PRELOAD=$(gcc -print-file-name=libasan.so)).
Build against the torch you run: `pip install --no-build-isolation -e .`.
"""

import os
import re
import shutil
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent


def find_cuda_home():
    """The CUDA toolkit root. torch's own guess goes wrong when `nvcc` on PATH is a wrapper
    script outside the toolkit (it then derives /usr/local), so check for real headers."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    candidates += ["/usr/local/cuda"]
    for root in filter(None, candidates):
        if (Path(root) / "include" / "cuda_runtime_api.h").exists():
            return str(Path(root).resolve())
    return None


cuda_home = find_cuda_home()
if cuda_home:
    os.environ["CUDA_HOME"] = cuda_home  # must be set before torch.utils.cpp_extension loads

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

VERSION = re.search(r'__version__ = "(.+)"', (ROOT / "fastcredit/_version.py").read_text())[1]
# The extension links against this torch's C++ ABI, which changes between minor releases, so
# the package requires the release it is compiled against (a wheel built here says so).
TORCH_RELEASE = ".".join(torch.__version__.split("+")[0].split(".")[:2])


def want_cuda():
    forced = os.environ.get("FASTCREDIT_CUDA")
    if forced is not None:
        if forced not in ("0", "1"):
            raise SystemExit(f"FASTCREDIT_CUDA must be 0 or 1, got {forced!r}")
        if forced == "1" and (torch.version.cuda is None or cuda_home is None):
            raise SystemExit(
                "FASTCREDIT_CUDA=1 needs a CUDA build of torch and a CUDA toolkit "
                f"(torch.version.cuda={torch.version.cuda}, CUDA toolkit={cuda_home})"
            )
        return forced == "1"
    return torch.version.cuda is not None and cuda_home is not None


# For a build host without a GPU: SASS for Turing, Ampere and Hopper (sm_86/89 run sm_80's),
# plus compute_90 PTX that newer GPUs (sm_100, sm_120) compile when the library loads.
FALLBACK_CUDA_ARCHS = "7.5;8.0;9.0+PTX"


def cuda_arch_list(environ, gpus):
    """TORCH_CUDA_ARCH_LIST for the CUDA build: the user's; else None when GPUs are visible
    (`gpus`: their compute capabilities), so torch targets them with PTX for the newest;
    else the fallback (with no GPU torch cannot infer a list and its build helper crashes)."""
    if environ.get("TORCH_CUDA_ARCH_LIST"):
        return environ["TORCH_CUDA_ARCH_LIST"]
    return None if gpus else FALLBACK_CUDA_ARCHS


def visible_gpus():
    if not torch.cuda.is_available():
        return []
    return sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})


with_cuda = want_cuda()
cuda_archs = ""  # a CPU-only build exports no arch list for a later CUDA build to inherit
if with_cuda:
    gpus = visible_gpus()
    cuda_archs = cuda_arch_list(os.environ, gpus)
    if cuda_archs is None:
        cuda_archs = "visible GPUs: " + ";".join(f"{major}.{minor}" for major, minor in gpus)
    else:
        os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_archs  # torch's build helper reads it there

debug = os.environ.get("FASTCREDIT_DEBUG") == "1"
# -ffp-contract=off: no FMA contraction, so seeded matrices are bit-identical on every device.
# -fno-trapping-math and -fno-math-errno let loops with floating-point selects and sqrt (sign
# feedback, Box-Muller) vectorise. They change no computed value, only whether FP exception
# flags and errno are kept exact, which nothing here reads.
cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math",
             "-fno-math-errno", "-g" if debug else "-g0"]
defines = [
    ("FASTCREDIT_VERSION", f'"{VERSION}"'),
    ("FASTCREDIT_TORCH_VERSION", f'"{torch.__version__}"'),
    ("FASTCREDIT_WITH_CUDA", "1" if with_cuda else "0"),
    ("FASTCREDIT_CUDA_VERSION", f'"{torch.version.cuda if with_cuda else ""}"'),
    ("FASTCREDIT_CUDA_ARCHS", f'"{cuda_archs}"'),
]
include_dirs = [str(ROOT / "csrc")]
c_flags, c_link_flags = list(cxx_flags), ["-fopenmp"]
if os.environ.get("FASTCREDIT_SANITIZE") == "1":
    # Any report aborts the process (no recovery), so a test run that passes is a clean one.
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                "-fno-omit-frame-pointer"]
    c_flags = [f for f in c_flags if f not in ("-O3", "-g0")] + ["-O1", "-g", *sanitize]
    c_link_flags += sanitize


def sources(pattern):
    """Relative paths (setuptools wants them) of the files matching pattern, sorted."""
    return sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(pattern))


ext_modules = [
    CppExtension(
        "fastcredit._C",
        sources=["csrc/ops.cpp", "csrc/module.cpp", *sources("csrc/cpu/*.cpp")],
        include_dirs=include_dirs,
        define_macros=defines,
        extra_compile_args={"cxx": c_flags},
        extra_link_args=c_link_flags,
    )
]
if with_cuda:
    ext_modules.append(
        CUDAExtension(
            "fastcredit._C_cuda",
            sources=["csrc/ops_cuda.cpp", *sources("csrc/cuda/*.cu")],
            include_dirs=include_dirs,
            extra_compile_args={
                "cxx": cxx_flags,
                "nvcc": ["-O3", "-std=c++20", "-Xptxas", "-warn-spills"],
            },
        )
    )

if os.environ.get("FASTCREDIT_EMULATE_CUDA") == "1":
    ext_modules.append(
        CppExtension(
            "fastcredit._C_emu",
            sources=["tests/cuda_emu/ops_emu.cpp"],
            include_dirs=include_dirs + [str(ROOT / "tests" / "cuda_emu")],
            # Fibers: 6-12x faster than one OS thread per CUDA thread; TSan runs elsewhere.
            define_macros=[("FC_EMU_FIBERS", "1")],
            # g++ cannot silence `#pragma unroll` warnings from inside the header
            extra_compile_args={"cxx": cxx_flags + ["-Wno-unknown-pragmas"]},
        )
    )


class BuildExtensionRecordingTorch(BuildExtension.with_options(use_ninja=True)):
    """Also writes fastcredit/_build_info.py beside _C (in the wheel's tree, or in the source
    tree for editable and --inplace builds), so that `import fastcredit` can compare the torch
    it was built against with the one it runs under before loading _C: a _C built for another
    release may fail to load with an undefined symbol that names neither, or load and
    misbehave."""

    def run(self):
        super().run()
        target = Path(self.get_ext_fullpath("fastcredit._C")).with_name("_build_info.py")
        target.write_text(
            "# Written by setup.py when the extension was built; not in version control.\n"
            f"TORCH_VERSION = {torch.__version__!r}\n"
        )


setup(
    version=VERSION,
    install_requires=[f"torch=={TORCH_RELEASE}.*"],
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExtensionRecordingTorch},
)
