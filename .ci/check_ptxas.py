#!/usr/bin/env python3
"""Fail on any register spill that `ptxas -v` reports, unless it is in spill_allowlist.txt.

Usage: check_ptxas.py BUILD_LOG. The log is the output of compiling every .cu with
`-Xptxas -v`; this prints one line per kernel and architecture (registers, shared memory,
spills) so the resource report stays in CI's log.
"""

import re
import subprocess
import sys
from pathlib import Path

ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+a?)'")
USAGE = re.compile(r"Used (\d+) registers(.*)")
SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def demangle(names):
    cxxfilt = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    return cxxfilt.stdout.splitlines() if cxxfilt.returncode == 0 else list(names)


def allowlist():
    """Lines `substring-of-demangled-kernel-name  # reason`; a reason is required."""
    allowed = []
    path = Path(__file__).with_name("spill_allowlist.txt")
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, reason = line.partition("#")
        if not reason.strip():
            sys.exit(f"{path}: entry {pattern.strip()!r} has no reason")
        allowed.append(pattern.strip())
    return allowed


def main(log_path):
    kernels = []  # [mangled, arch, registers, rest, spill_bytes]
    current = None
    for line in Path(log_path).read_text(errors="replace").splitlines():
        if m := ENTRY.search(line):
            current = [m[1], m[2], None, "", 0]
            kernels.append(current)
        elif current and (m := SPILL.search(line)):
            current[4] = int(m[1]) + int(m[2])
        elif current and (m := USAGE.search(line)):
            current[2], current[3] = int(m[1]), m[2].strip(" ,")
    if not kernels:
        sys.exit(f"{log_path}: no ptxas report found (was -Xptxas -v passed?)")
    allowed = allowlist()
    bad = []
    for (mangled, arch, regs, rest, spills), name in zip(kernels, demangle(k[0] for k in kernels)):
        print(f"{arch}  {regs:>3} regs  spill {spills:>4} B  {rest}  {name}")
        if spills and not any(p in name for p in allowed):
            bad.append(f"{name} on {arch}: {spills} bytes spilled")
    if bad:
        print("\nregister spills not in .ci/spill_allowlist.txt:\n  " + "\n  ".join(bad))
        return 1
    print(f"\n{len(kernels)} kernel builds, no unexpected register spills")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
