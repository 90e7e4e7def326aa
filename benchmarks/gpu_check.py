"""The timing half of ``benchmarks/gpu_check.sh``: every fused op against its PyTorch
composition and its memory or compute floor, every training step against backprop, and the
documented error of every op called with tensors on two devices. Writes one JSON file and
prints a table.

Floors are measured on the machine itself: the memory floor of an op is the bytes it must
move divided by the bandwidth of a large device-to-device copy timed first; the compute floor
of the seeded projection is its FMAs at the rate of a large FP32 matmul with TF32 off (CUDA
cores, as the kernel uses). ``roofline_h100_us`` is the estimate in benchmarks/ROOFLINE.md for
an H100 (HBM 3.35 TB/s), quoted beside the measurement, not scaled to the card at hand.

``--device cpu --quick`` runs every code path on tiny shapes on the CPU (the test suite does,
so the report code is checked where no GPU exists); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import fastcredit
from fastcredit import reference
from fastcredit.app import bench

# benchmarks/ROOFLINE.md's H100 estimates (microseconds) for the shapes timed here.
ROOFLINE_H100_US = {
    "seeded_project resnet50 uniform": 1500.0,
    "seeded_project resnet50 normal": 2800.0,
    "sign_feedback 4096 scalar": 40.0,
    "sign_feedback 4096 stored": 60.0,
    "sign_feedback 4096 seeded_step": 40.0,
    "lra_error 256x4096 tanh": 3.8,
    "dfa_backward_epilogue 256x4096 tanh": 6.0,
    "feedback_fill_ 4096 uniform": 25.0,
    "feedback_fill_ 4096 normal": 55.0,
}


@dataclass
class OpRow:
    name: str
    fused_us: float
    composition_us: float
    floor_us: float
    floor: str  # "memory" or "compute"
    roofline_h100_us: float | None

    @property
    def speedup(self) -> float:
        return self.composition_us / self.fused_us

    @property
    def of_floor(self) -> float:
        return self.fused_us / self.floor_us if self.floor_us > 0 else math.inf


@dataclass
class StepRow:
    workload: str
    method: str
    step_ms: float
    ratio_to_bp: float


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# Rounds per measurement and the least time a round's back-to-back calls last (--quick: less).
TIMING = {"rounds": 7, "min_seconds": 0.02}


def time_us(fn: Callable[[], object], device: str) -> float:
    """Median over rounds of the mean time of back-to-back calls lasting ~min_seconds."""
    rounds, min_seconds = TIMING["rounds"], TIMING["min_seconds"]
    fn()  # warm-up: allocator, lazy init
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    reps = max(1, math.ceil(min_seconds / max(time.perf_counter() - start, 1e-7)))
    samples = []
    for _ in range(rounds):
        _sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        _sync(device)
        samples.append((time.perf_counter() - start) / reps)
    return statistics.median(samples) * 1e6


def copy_bandwidth(device: str, nbytes: int) -> float:
    """Bytes per second of a device-to-device copy, counting bytes read and written."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    seconds = time_us(lambda: dst.copy_(src), device) * 1e-6
    return 2 * src.numel() * 4 / seconds


def fp32_fma_rate(device: str, n: int) -> float:
    """FMAs per second of an n x n x n float32 matmul without TF32 (CUDA cores)."""
    a = torch.randn(n, n, device=device)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        seconds = time_us(lambda: a @ a, device) * 1e-6
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return n ** 3 / seconds


@dataclass(frozen=True)
class Shapes:
    batch: int  # rows of the DFA / LRA / epilogue inputs
    classes: int
    feature_map: int  # ResNet-50 layer4: 2048 x 7 x 7
    square: int  # the sign-feedback / fill layer is square x square
    width: int  # LRA / epilogue features


FULL = Shapes(batch=256, classes=1000, feature_map=2048 * 7 * 7, square=4096, width=4096)
QUICK = Shapes(batch=8, classes=10, feature_map=96, square=48, width=40)


def op_rows(device: str, shapes: Shapes, bandwidth: float, fma_rate: float) -> list[OpRow]:
    """Each fused op at one shape beside its PyTorch composition and its floor."""
    s = shapes
    generator = torch.Generator(device=device).manual_seed(0)

    def randn(*size):
        return torch.randn(*size, device=device, generator=generator)

    rows = []

    def add(name, fused, composition, *, nbytes=0, fmas=0):
        floor_s = max(nbytes / bandwidth, fmas / fma_rate)
        kind = "compute" if fmas / fma_rate > nbytes / bandwidth else "memory"
        rows.append(OpRow(name, time_us(fused, device), time_us(composition, device),
                          floor_s * 1e6, kind, ROOFLINE_H100_US.get(_label(name, shapes))))

    e = randn(s.batch, s.classes)
    for dist in ("uniform", "normal"):
        stored = fastcredit.feedback_matrix(7, s.classes, s.feature_map, dist=dist,
                                            device=device)
        add(f"seeded_project feature_map {dist}",
            lambda d=dist: fastcredit.seeded_project(e, 7, s.feature_map, dist=d),
            lambda b=stored: e @ b,
            nbytes=4 * s.batch * s.feature_map, fmas=s.batch * s.classes * s.feature_map)
        del stored
    w, m = randn(s.square, s.square), randn(s.square, s.square)
    layer = s.square * s.square * 4
    draw = torch.tensor(3)
    add("sign_feedback square scalar", lambda: fastcredit.sign_feedback(w, "scalar", scale=0.1),
        lambda: torch.sign(w) * 0.1, nbytes=2 * layer)
    add("sign_feedback square stored", lambda: fastcredit.sign_feedback(w, "stored", magnitude=m),
        lambda: torch.sign(w) * m.abs(), nbytes=3 * layer)
    add("sign_feedback square seeded_step",
        lambda: fastcredit.sign_feedback(w, "seeded_step", seed=5, step=draw),
        lambda: torch.sign(w) * fastcredit.feedback_matrix(
            reference.step_seed(5, 3), s.square, s.square, device=device).abs(),
        nbytes=2 * layer)
    a, d = randn(s.batch, s.width), randn(s.batch, s.width)
    add("lra_error batch x width tanh", lambda: fastcredit.lra_error(a, d, 0.1, "tanh"),
        lambda: torch.tanh(a) - torch.tanh(a - 0.1 * d), nbytes=3 * 4 * s.batch * s.width)
    grad, y = randn(s.batch, s.width), torch.tanh(randn(s.batch, s.width))

    def epilogue_composition():
        delta = grad * (1 - y * y)
        return delta, delta.sum(0)

    add("dfa_backward_epilogue batch x width tanh",
        lambda: fastcredit.dfa_backward_epilogue(grad, y, "tanh", saved_is_output=True),
        epilogue_composition, nbytes=3 * 4 * s.batch * s.width)
    out = torch.empty(s.square, s.square, device=device)
    for dist in ("uniform", "normal"):
        torch_fill = out.uniform_ if dist == "uniform" else out.normal_
        add(f"feedback_fill_ square {dist}",
            lambda d=dist: fastcredit.feedback_fill_(out, 9, dist=d), torch_fill,
            nbytes=layer)
    return rows


def _label(name: str, shapes: Shapes) -> str:
    """An op row's name in ROOFLINE.md's terms (only the full shapes have an estimate)."""
    if shapes != FULL:
        return name
    return (name.replace("feature_map", "resnet50").replace("square", str(FULL.square))
            .replace("batch x width", f"{FULL.batch}x{FULL.width}"))


def step_rows(device: str, workloads, methods) -> list[StepRow]:
    """Seconds per training step (zero_grad, forward, loss, backward) of each method on each
    workload, on ``device``, as a ratio to backprop's step in the same run."""
    rows = []
    for workload in workloads:
        times = {}
        for method in methods:
            if not bench.supports(workload, method):
                continue
            torch.manual_seed(0)
            model = bench.build_network(workload, method).to(device)
            x, y = (t.to(device) for t in bench.batch_of(workload))

            def step(model=model, x=x, y=y):
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()

            times[method] = time_us(step, device) / 1e3
        for method, ms in times.items():
            rows.append(StepRow(workload.name, method, ms, ms / times["bp"]))
    return rows


def mixed_device_errors(device: str) -> dict[str, str]:
    """Each op called with one tensor on the CPU and one on ``device``: the error message, or
    "no error" (a failure of the check: every op must name the device mismatch)."""
    cpu = torch.randn(4, 4)
    dev = cpu.to(device)
    calls = {
        "lra_error": lambda: fastcredit.lra_error(cpu, dev, 0.1),
        "dfa_backward_epilogue": lambda: fastcredit.dfa_backward_epilogue(cpu, dev, "tanh"),
        "sign_feedback stored": lambda: fastcredit.sign_feedback(cpu, "stored", magnitude=dev),
        "sign_feedback stored (weight on device)":
            lambda: fastcredit.sign_feedback(dev, "stored", magnitude=cpu),
    }
    found = {}
    for name, call in calls.items():
        try:
            call()
        except RuntimeError as error:
            found[name] = str(error).splitlines()[0]
        else:
            found[name] = "no error"
    return found


def mixed_device_ok(errors: dict[str, str]) -> bool:
    """Every call raised, naming the device problem, and none tripped an internal assert."""
    return all("device" in message and "INTERNAL ASSERT" not in message
               for message in errors.values())


def format_report(report: dict) -> str:
    lines = [f"device: {report['device_name']}   copy bandwidth "
             f"{report['copy_bandwidth_gbs']:.0f} GB/s   FP32 FMA rate "
             f"{report['fp32_fma_tflops']:.1f} T FMA/s (TF32 off)", "",
             f"{'op':<44}{'fused us':>10}{'torch us':>10}{'speedup':>9}{'floor us':>10}"
             f"{'x floor':>9}{'H100 est':>10}"]
    for row in report["ops"]:
        est = row["roofline_h100_us"]
        lines.append(f"{row['name']:<44}{row['fused_us']:>10.1f}{row['composition_us']:>10.1f}"
                     f"{row['speedup']:>9.2f}{row['floor_us']:>10.1f}{row['of_floor']:>9.2f}"
                     f"{'' if est is None else f'{est:.1f}':>10}")
    lines += ["", f"{'workload':<16}{'method':<12}{'step ms':>10}{'/ bp':>8}"]
    for row in report["steps"]:
        lines.append(f"{row['workload']:<16}{row['method']:<12}{row['step_ms']:>10.3f}"
                     f"{row['ratio_to_bp']:>8.2f}")
    lines += ["", "mixed-device calls (each must name the device mismatch):"]
    lines += [f"  {name}: {message}" for name, message in report["mixed_device_errors"].items()]
    lines.append(f"mixed-device check: {'ok' if report['mixed_device_ok'] else 'FAILED'}")
    return "\n".join(lines)


def run(device: str, quick: bool) -> dict:
    if quick:
        TIMING.update(rounds=2, min_seconds=1e-4)
    shapes = QUICK if quick else FULL
    bandwidth = copy_bandwidth(device, (1 << 20) if quick else (1 << 30))
    fma_rate = fp32_fma_rate(device, 64 if quick else 8192)
    workloads = bench.QUICK_WORKLOADS if quick else bench.WORKLOADS
    methods = list(bench.METHODS)
    ops = op_rows(device, shapes, bandwidth, fma_rate)
    errors = mixed_device_errors(device) if device.startswith("cuda") else {}
    return {
        "device": device,
        "device_name": (torch.cuda.get_device_name() if device.startswith("cuda")
                        else platform.processor() or "cpu"),
        "quick": quick,
        "torch": torch.__version__,
        "fastcredit": fastcredit.build_info(),
        "copy_bandwidth_gbs": bandwidth / 1e9,
        "fp32_fma_tflops": fma_rate / 1e12,
        "ops": [{**asdict(r), "speedup": r.speedup, "of_floor": r.of_floor} for r in ops],
        "steps": [asdict(r) for r in step_rows(device, workloads, methods)],
        "mixed_device_errors": errors,
        "mixed_device_ok": mixed_device_ok(errors),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="gpu-check", help="folder for gpu_check.json")
    parser.add_argument("--device", default="cuda", help="device to time on")
    parser.add_argument("--quick", action="store_true",
                        help="tiny shapes: exercises every path, times nothing meaningful")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device")
        return 0
    if args.device.startswith("cuda") and not fastcredit.cuda_kernels_available():
        print("fastcredit was built without its CUDA kernels: "
              f"{fastcredit.build_info().get('cuda_kernels_error', 'FASTCREDIT_CUDA=0?')}",
              file=sys.stderr)
        return 1
    report = run(args.device, args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(format_report(report))
    print(f"\nwrote {out / 'gpu_check.json'}")
    return 0 if report["mixed_device_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
