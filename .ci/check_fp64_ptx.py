#!/usr/bin/env python3
"""Fail if the PTX of the kernels that generate seeded feedback matrices holds an FP64
operation that is fused (fma/mad) or that ptxas may fuse (mul/add/sub without a rounding
mode): either breaks the claim that a seed gives the same bits on the CPU and the GPU.

Usage: check_fp64_ptx.py [PTX_FILE...]. Without files it compiles csrc/cuda/projection.cu and
csrc/cuda/sign_feedback.cu to PTX for sm_80 and sm_90 with nvcc (the extension's flags).

philox.h writes the generator's FP64 arithmetic with __dmul_rn/__dadd_rn (mul.rn/add.rn,
never contracted). The one exception allowed is a plain mul by a power of two, which is exact
(so even fused into an FMA it rounds the same). Checked: every feedback_fill_kernel, and the
non-double seeded_project_kernel and sign_feedback_kernel, whose FP64 work is all generation;
their double instantiations also run the user's FP64 product and sums (FMA there is fine).
"""

import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["csrc/cuda/projection.cu", "csrc/cuda/sign_feedback.cu"]
ARCHS = ["sm_80", "sm_90"]
# torch's CUDA extension build defines these; the half kernels must compile under them
NVCC_FLAGS = ["-O3", "-std=c++17", "-D__CUDA_NO_HALF_OPERATORS__",
              "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
              "-D__CUDA_NO_HALF2_OPERATORS__"]
# Kernels whose presence is required: a rename must not make the check vacuous.
REQUIRED = ["feedback_fill_kernel<float>", "feedback_fill_kernel<double>",
            "seeded_project_kernel<float>", "sign_feedback_kernel<float>"]

ENTRY = re.compile(r"^\.(?:visible|weak)?\s*\.entry\s+(\w+)\s*\(", re.M)
FP64_OP = re.compile(r"^\s*(?:@!?%p\d+\s+)?((?:fma|mad|mul|add|sub)((?:\.\w+)*)\.f64)\s+([^;]*);",
                     re.M)
ROUNDING = {".rn", ".rz", ".rm", ".rp"}


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    return out.stdout.splitlines() if out.returncode == 0 else list(names)


def checked(name):
    if "feedback_fill_kernel<" in name:
        return True
    kernel = re.search(r"(seeded_project_kernel|sign_feedback_kernel)<([^>]*)>", name)
    return bool(kernel) and kernel[2] != "double"


def is_power_of_two_immediate(operand):
    if not re.fullmatch(r"0d[0-9A-Fa-f]{16}", operand):
        return False
    (bits,) = struct.unpack(">Q", bytes.fromhex(operand[2:]))
    exponent, mantissa = (bits >> 52) & 0x7FF, bits & ((1 << 52) - 1)
    return mantissa == 0 and 0 < exponent < 0x7FF


def violations(ptx_text):
    """(kernel, problems) for every checked kernel in the PTX text."""
    entries = list(ENTRY.finditer(ptx_text))
    names = demangle([m[1] for m in entries])
    result = []
    for i, (match, name) in enumerate(zip(entries, names)):
        if not checked(name):
            continue
        body = ptx_text[match.end(): entries[i + 1].start() if i + 1 < len(entries) else None]
        problems = []
        for op in FP64_OP.finditer(body):
            instruction, modifiers, operands = op[1], set(re.findall(r"\.\w+", op[2])), op[3]
            sources = [s.strip() for s in operands.split(",")[1:]]
            if instruction.startswith(("fma", "mad")):
                problems.append(f"fused: {instruction} {operands}")
            elif not modifiers & ROUNDING and not (
                    instruction.startswith("mul") and any(map(is_power_of_two_immediate, sources))):
                problems.append(f"contractible: {instruction} {operands}")
        result.append((name, problems))
    return result


def compile_ptx(outdir):
    files = []
    for source in SOURCES:
        for arch in ARCHS:
            out = Path(outdir) / f"{Path(source).stem}.{arch}.ptx"
            subprocess.run(["nvcc", *NVCC_FLAGS, f"-arch={arch}", "-ptx", "-I", str(ROOT / "csrc"),
                            str(ROOT / source), "-o", str(out)], check=True)
            files.append(out)
    return files


def main(paths):
    bad, seen = [], {}
    for path in paths:
        for name, problems in violations(Path(path).read_text()):
            seen.setdefault(Path(path).name, set()).add(name)
            print(f"{'ok  ' if not problems else 'FAIL'}  {Path(path).name}  {name}")
            bad += [f"{Path(path).name} {name}: {p}" for p in problems]
    names = {n for group in seen.values() for n in group}
    missing = [k for k in REQUIRED if not any(k in n for n in names)]
    if bad:
        print("\nFP64 operations that break CPU/GPU bit identity:\n  " + "\n  ".join(bad[:50]))
    if missing:
        print(f"\nkernels not found in the PTX (renamed?): {missing}")
    if bad or missing:
        return 1
    print(f"\n{len(names)} generating kernels, no fused or contractible FP64 operation")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(main(sys.argv[1:]))
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(main(compile_ptx(tmp)))
