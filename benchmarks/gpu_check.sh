#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU and a CUDA build of torch:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. builds fastcredit's CUDA kernels (fastcredit._C_cuda) in place, for this GPU's arch;
# 2. runs the `cuda` test backend: every op against its CPU twin, seeded feedback bit-identical
#    to the CPU's (tests whose parameters name the `cuda` backend);
# 3. times every op against its PyTorch composition and its floor, every training step against
#    backprop, checks the mixed-device errors (benchmarks/gpu_check.py), and writes
#    OUT_DIR/gpu_check.json, OUT_DIR/tests.log and a printed table.
# Budget: under 8 minutes on one H100/H200-class GPU. Without a CUDA device it prints
# "no CUDA device" and exits 0. PYTHON picks the interpreter (default python3).
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
out=$(mkdir -p "${1:-$repo/gpu-check}" && cd "${1:-$repo/gpu-check}" && pwd)

if ! "$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null
then
  echo "no CUDA device"
  exit 0
fi
cd "$repo"
# pyproject's SPDX license field needs setuptools >= 77 (an older one rejects the metadata)
if ! "$py" -c "import sys, setuptools; sys.exit(int(setuptools.__version__.split('.')[0]) < 77)"
then
  echo "setuptools >= 77 is needed to build fastcredit (found $("$py" -c \
    'import setuptools; print(setuptools.__version__)')): install a newer one (for an offline \
machine, carry its wheel) and rerun"
  exit 1
fi
status=0
arch=$("$py" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
echo "== build (TORCH_CUDA_ARCH_LIST=$arch, $(date +%T))"
if ! FASTCREDIT_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    timeout 300 "$py" setup.py build_ext --inplace > "$out/build.log" 2>&1; then
  tail -40 "$out/build.log"
  echo "build failed"
  exit 1
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

echo "== cuda test backend ($(date +%T))"
timeout 240 "$py" -m pytest -q -p no:cacheprovider -m "not sanitizer" -k "cuda and not emulated" \
  tests > "$out/tests.log" 2>&1
tests=$?
tail -15 "$out/tests.log"
[ "$tests" -eq 0 ] || status=1

echo "== timings ($(date +%T))"
timeout 240 "$py" benchmarks/gpu_check.py --out "$out" || status=1
echo "== done ($(date +%T)), status $status"
exit "$status"
