#!/usr/bin/env python3
"""Fail unless every `__global__` kernel in csrc/cuda was launched by an emulated test.

Usage: check_kernel_coverage.py LAUNCH_LOG, where LAUNCH_LOG was written by test runs with
FC_EMU_LAUNCH_LOG=LAUNCH_LOG (the emulation header appends each launched kernel's name).
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s*)?(\w+)\s*\(")


def declared_kernels():
    found = {}
    for path in sorted((ROOT / "csrc" / "cuda").glob("*.cu*")):
        for name in KERNEL.findall(path.read_text()):
            found[name] = path.relative_to(ROOT)
    return found


def main(log_path):
    kernels = declared_kernels()
    if not kernels:
        sys.exit("no __global__ kernels found in csrc/cuda")
    log = Path(log_path)
    launched = set(log.read_text().split()) if log.exists() else set()
    missing = sorted(set(kernels) - launched)
    for name in sorted(kernels):
        print(f"{'launched' if name in launched else 'MISSING ':>8}  {name}  ({kernels[name]})")
    if missing:
        print(f"\n{len(missing)} kernel(s) never executed by an emulated test: {missing}")
        return 1
    print(f"\nall {len(kernels)} kernels executed in emulation")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
