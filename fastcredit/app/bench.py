"""`fastcredit bench`: training-step time of every method relative to plain PyTorch backprop
(and to BioTorch when it is installed), measured in one process with interleaved rounds, plus
the share of each step spent in GEMM/convolution library calls.

A step is ``zero_grad``, forward, cross-entropy and ``backward`` (no optimizer update: it costs
every method the same and would only pull the ratios towards 1). The same builders feed the
pytest-benchmark suite in ``benchmarks/``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

# dfa-stored: stored feedback matrices; dfa-spatial: spatially shared feedback on feature maps
METHODS = ("bp", "fa", "usf", "frsf", "brsf", "kp", "dfa", "dfa-stored", "dfa-spatial", "lra")
DFA_VARIANTS = {"dfa": {}, "dfa-stored": {"feedback": "stored"},
                "dfa-spatial": {"spatial": "shared"}}
# BioTorch's names for the methods it has (its DFA keeps stored matrices).
BIOTORCH_MODES = {"fa": "fa", "usf": "usf", "frsf": "frsf", "brsf": "brsf", "dfa": "dfa"}
# Profiler events whose self time is the GEMM / convolution library at work (MKL, oneDNN).
GEMM_EVENTS = frozenset({
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv",
    "aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
    "aten::_slow_conv2d_backward", "aten::mkldnn_convolution_backward",
})


@dataclass(frozen=True)
class Workload:
    """A network and batch: ``model`` is "mlp" (tanh, ``widths`` = input .. classes), "convnet"
    or "lenet" (``fastcredit train``'s networks, inputs ``[batch, *image]``)."""

    name: str
    model: str
    batch: int
    image: tuple[int, int] = (28, 28)
    widths: tuple[int, ...] = ()

    @property
    def classes(self) -> int:
        return self.widths[-1] if self.widths else 10


WORKLOADS = (
    Workload("mlp-b128", "mlp", 128, widths=(784, 1024, 1024, 1024, 10)),
    Workload("mlp-b512", "mlp", 512, widths=(784, 1024, 1024, 1024, 10)),
    Workload("convnet-b128", "convnet", 128),
    Workload("lenet-b128", "lenet", 128),
    # Small models, where most of the field's experiments run and the fixed cost per layer
    # and step shows: the main job's MLP, a digits-sized MLP, the conv net at batch 32.
    Workload("mlp256-b64", "mlp", 64, widths=(784, 256, 256, 10)),
    Workload("mlp128-b32", "mlp", 32, image=(8, 8), widths=(64, 128, 128, 10)),
    Workload("convnet-b32", "convnet", 32),
)
# Tiny shapes for smoke runs (CI, tests): every code path, a fraction of a second each.
QUICK_WORKLOADS = (
    Workload("mlp-quick", "mlp", 16, image=(8, 8), widths=(64, 48, 48, 48, 10)),
    Workload("convnet-quick", "convnet", 8, image=(12, 12)),
    Workload("lenet-quick", "lenet", 8, image=(16, 16)),
)


def supports(workload: Workload, method: str) -> bool:
    """Spatially shared DFA feedback needs feature maps, which the MLP has not."""
    return method != "dfa-spatial" or workload.model != "mlp"


def _mlp(method: str, widths: Sequence[int]) -> nn.Module:
    from .. import nn as fcnn

    pairs = list(itertools.pairwise(widths))
    if method == "lra":
        return fcnn.LRA(list(widths), "tanh")
    if method.startswith("dfa"):
        blocks = nn.Sequential(nn.Flatten(), *(fcnn.DFALinear(i, o, "tanh") for i, o in pairs[:-1]))
        feedback = "stored" if method == "dfa-stored" else "seeded"
        return nn.Sequential(blocks, nn.Linear(*pairs[-1]),
                             fcnn.DFAOutput(fcnn.dfa_points(blocks), widths[-1],
                                            feedback=feedback))
    if method == "bp":
        linear = nn.Linear
    else:
        def linear(i, o):
            return fcnn.Linear(i, o, method=method)
    layers: list[nn.Module] = [nn.Flatten()]
    for i, o in pairs[:-1]:
        layers += [linear(i, o), nn.Tanh()]
    return nn.Sequential(*layers, linear(*pairs[-1]))


def build_network(workload: Workload, method: str) -> nn.Module:
    """The workload's network trained by ``method`` with fastcredit (``"bp"``: plain PyTorch
    layers)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if not supports(workload, method):
        raise ValueError(f"method {method!r} has no {workload.model} network")
    if workload.model == "mlp":
        return _mlp(method, workload.widths)
    from . import train

    config = train.TrainConfig(method=method.split("-")[0], model=workload.model,
                               method_options=DFA_VARIANTS.get(method, {}))
    return train.build_model(config, workload.image, workload.classes)


def _biotorch_network(workload: Workload, method: str) -> nn.Module:
    from biotorch.module.biomodule import BioModule

    # BioTorch's layers use torch's deprecated non-full backward hooks: its warning, not ours
    warnings.filterwarnings("ignore", message="Using a non-full backward hook",
                            category=FutureWarning)
    with contextlib.redirect_stdout(io.StringIO()):  # BioTorch prints a conversion report
        return BioModule(build_network(workload, "bp"), mode=BIOTORCH_MODES[method],
                         output_dim=workload.classes)


def batch_of(workload: Workload, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(workload.batch, *workload.image, generator=generator)
    return x, torch.randint(0, workload.classes, (workload.batch,), generator=generator)


def make_step(workload: Workload, method: str, impl: str = "fastcredit") -> Callable[[], None]:
    """A closure running one training step (zero_grad, forward, loss, backward) of
    ``method`` on the workload. ``impl``: "fastcredit" (``"bp"`` is plain PyTorch) or
    "biotorch"."""
    torch.manual_seed(0)
    x, y = batch_of(workload)
    if impl == "biotorch":
        model = _biotorch_network(workload, method)
        if method == "dfa":  # BioTorch's DFA needs the targets and the loss in its forward
            def step() -> None:
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(x, y, F.cross_entropy), y).backward()

            return step
    elif impl == "fastcredit":
        model = build_network(workload, method)
    else:
        raise ValueError(f"unknown impl {impl!r}; expected 'fastcredit' or 'biotorch'")

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    return step


def biotorch_available() -> bool:
    try:
        import biotorch  # noqa: F401
    except ImportError:
        return False
    return True


def time_interleaved(steps: dict[str, Callable[[], None]], rounds: int,
                     min_seconds: float) -> dict[str, list[float]]:
    """Seconds per step of each closure, ``rounds`` samples each, the closures taking turns
    within each round (so load drift hits all of them alike). A sample is the fastest of
    enough back-to-back steps to last about ``min_seconds``: on a shared machine a step that
    lost the CPU to another process is slower, never faster."""
    repeats = {}
    for name, step in steps.items():
        step()  # warm-up: lazy buffers, allocator, oneDNN primitive caches
        start = time.perf_counter()
        step()
        once = time.perf_counter() - start
        repeats[name] = max(1, math.ceil(min_seconds / max(once, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            fastest = math.inf
            for _ in range(repeats[name]):
                start = time.perf_counter()
                step()
                fastest = min(fastest, time.perf_counter() - start)
            samples[name].append(fastest)
    return samples


def median_ratio(samples: list[float], baseline: list[float]) -> float:
    """Median over rounds of the per-round ratio: each round's pair ran back to back."""
    return statistics.median(a / b for a, b in zip(samples, baseline))


@contextlib.contextmanager
def _native_stderr_silenced():
    """File descriptor 2 goes to /dev/null: torch 2.13's profiler logs two lines to it from C++
    at every start and stop, which would bury the table. The profiled steps already ran once
    before, so nothing they would say is lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def gemm_fraction(step: Callable[[], None], steps: int = 3) -> float:
    """Share of a step's wall time spent inside GEMM/convolution library calls (the self CPU
    time of the ``GEMM_EVENTS`` under torch.profiler, over the time of the whole step)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    step()
    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            with record_function("fastcredit_bench_step"):
                step()
    events = prof.key_averages()
    total = sum(e.cpu_time_total for e in events if e.key == "fastcredit_bench_step")
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_EVENTS)
    return gemm / total if total > 0 else float("nan")


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    from .. import __version__

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "fastcredit": __version__,
        "python": platform.python_version(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _register_flop_formulas() -> None:
    """FLOPs of fastcredit's projection op in torch's FLOP formulas (they cover aten's GEMMs
    and convolutions; a custom op is invisible otherwise)."""
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.fastcredit.seeded_project)
    def _seeded_project(x_shape, seed, cols, *args, out_shape=None, **kwargs):
        return 2 * x_shape[0] * x_shape[1] * cols


# fastcredit's elementwise ops: one pass over their operands, so bandwidth-bound.
ELEMENTWISE_OPS = frozenset({"sign_feedback", "lra_error", "dfa_backward_epilogue",
                             "feedback_fill_"})


def step_costs(step: Callable[[], None]) -> tuple[int, int]:
    """(GEMM + convolution + projection FLOPs, bytes read and written by fastcredit's
    elementwise ops) of one call of ``step``, counted from the ops it runs with torch's FLOP
    formulas. (Not through FlopCounterMode: its module tracker hooks every module output's
    gradient, which turns DFA's norm fold off, so it would count a step that does not run.)"""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class _Costs(TorchDispatchMode):
        flops = moved = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func.overloadpacket)
            if formula is not None:
                self.flops += formula(*args, **kwargs, out_val=out)
            if func.namespace == "fastcredit" and func.overloadpacket.__name__ in ELEMENTWISE_OPS:
                tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs, out))
                           if isinstance(t, torch.Tensor)]
                self.moved += sum(t.numel() * t.element_size() for t in tensors)
            return out

    if not getattr(step_costs, "_registered", False):
        _register_flop_formulas()
        step_costs._registered = True
    with _Costs() as costs:
        step()
    return costs.flops, costs.moved


def copy_bandwidth(nbytes: int = 1 << 26) -> float:
    """Bytes per second (read + written) of a large tensor copy on this machine's threads."""
    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    samples = time_interleaved({"copy": lambda: dst.copy_(src)}, rounds=5, min_seconds=0.05)
    return 2 * nbytes / min(samples["copy"])


def weight_layers(workload: Workload) -> int:
    """Linear and Conv layers of the workload's network: what a method converts."""
    model = build_network(workload, "bp")
    return sum(isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
               for m in model.modules())


@dataclass
class Row:
    workload: str
    method: str
    ms: float  # median over rounds of the fastest step in each round, in ms
    vs_bp: float  # median per-round ratio to plain PyTorch backprop
    vs_biotorch: float | None  # fastcredit / BioTorch for the same method, when measured
    biotorch_vs_bp: float | None
    gemm_fraction: float | None
    flop_floor: float  # GEMM/conv/projection FLOPs of the method / of backprop, per step
    memory_floor_ms: float  # elementwise ops' bytes / measured copy bandwidth
    us_per_layer_over_bp: float  # (step - bp step) / weight layers, in microseconds


def run(workloads: Sequence[Workload] = WORKLOADS, methods: Sequence[str] = METHODS,
        rounds: int = 7, min_seconds: float = 0.2, biotorch: bool | None = None,
        profile: bool = True, log: Callable[[str], None] = lambda text: None) -> dict:
    """Measure every (workload, method) against plain backprop in the same process; returns
    ``{"machine": ..., "settings": ..., "rows": [Row as dict, ...]}``."""
    if biotorch is None:
        biotorch = biotorch_available()
    bandwidth = copy_bandwidth()
    rows = []
    for workload in workloads:
        log(f"{workload.name}: building")
        steps = {"bp": make_step(workload, "bp")}
        for method in methods:
            if method != "bp" and supports(workload, method):
                steps[method] = make_step(workload, method)
        if biotorch:
            for method in methods:
                if method in BIOTORCH_MODES:
                    steps[f"biotorch:{method}"] = make_step(workload, method, "biotorch")
        log(f"{workload.name}: timing {len(steps)} steps x {rounds} rounds")
        samples = time_interleaved(steps, rounds, min_seconds)
        bp_flops = step_costs(steps["bp"])[0]
        layers = weight_layers(workload)
        bp_ms = 1e3 * statistics.median(samples["bp"])
        for method in methods:
            if method not in steps:
                continue
            bio = samples.get(f"biotorch:{method}")
            flops, moved = step_costs(steps[method])
            ms = 1e3 * statistics.median(samples[method])
            rows.append(Row(
                workload.name, method, ms,
                median_ratio(samples[method], samples["bp"]),
                median_ratio(samples[method], bio) if bio else None,
                median_ratio(bio, samples["bp"]) if bio else None,
                gemm_fraction(steps[method]) if profile else None,
                flops / bp_flops, 1e3 * moved / bandwidth, 1e3 * (ms - bp_ms) / layers,
            ))
    return {
        "machine": {**machine(), "copy_bandwidth_gbs": bandwidth / 1e9},
        "settings": {"rounds": rounds, "min_seconds": min_seconds, "biotorch": biotorch,
                     "step": "zero_grad + forward + cross_entropy + backward"},
        "workloads": [asdict(w) for w in workloads],
        "rows": [asdict(r) for r in rows],
    }


def format_table(result: dict) -> str:
    """The ratio table ``fastcredit bench`` prints."""
    m = result["machine"]
    load = m["load_average_1m"]
    lines = [(f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads, torch {m['torch']}, "
              f"fastcredit {m['fastcredit']}, load average "
              f"{'unknown' if load is None else f'{load:.2f}'}"),
             (f"medians over {result['settings']['rounds']} interleaved rounds of each round's "
              "fastest step; ratio < 1: faster"),
             ("FLOP floor: the method's GEMM/conv/projection FLOPs / backprop's; mem floor: "
              "bytes of fastcredit's elementwise ops / copy bandwidth "
              f"({m.get('copy_bandwidth_gbs', float('nan')):.1f} GB/s); us/layer: "
              "(step - bp step) / weight layers"),
             ""]
    header = (f"{'workload':<14} {'method':<11} {'ms/step':>8} {'/ our bp':>9} "
              f"{'FLOP floor':>10} {'mem floor ms':>12} {'us/layer':>9} {'GEMM %':>7}")
    if result["settings"]["biotorch"]:
        header += f" {'/ BioTorch':>11} {'BioTorch/bp':>12}"
    lines.append(header)
    for r in result["rows"]:
        gemm = "" if r["gemm_fraction"] is None else f"{100 * r['gemm_fraction']:.0f}"
        line = (f"{r['workload']:<14} {r['method']:<11} {r['ms']:>8.2f} {r['vs_bp']:>9.3f} "
                f"{r['flop_floor']:>10.3f} {r['memory_floor_ms']:>12.3f} "
                f"{r['us_per_layer_over_bp']:>9.1f} {gemm:>7}")
        if result["settings"]["biotorch"]:
            bio = "" if r["vs_biotorch"] is None else f"{r['vs_biotorch']:.3f}"
            bio_bp = "" if r["biotorch_vs_bp"] is None else f"{r['biotorch_vs_bp']:.3f}"
            line += f" {bio:>11} {bio_bp:>12}"
        lines.append(line)
    return "\n".join(lines)


def main(*, quick: bool = False, threads: int = 2, rounds: int | None = None,
         json_path: str | None = None, methods: Sequence[str] = METHODS,
         workloads: Sequence[str] | None = None, biotorch: bool | None = None) -> dict:
    """What ``fastcredit bench`` runs: measure, print the table, optionally write JSON."""
    torch.set_num_threads(threads)
    chosen = QUICK_WORKLOADS if quick else WORKLOADS
    if workloads:
        known = {w.name: w for w in (*WORKLOADS, *QUICK_WORKLOADS)}
        chosen = [known[name] for name in workloads]
    result = run(chosen, methods, rounds=rounds or (2 if quick else 7),
                 min_seconds=0.0 if quick else 0.2, biotorch=biotorch,
                 profile=True, log=lambda text: print(text, file=sys.stderr, flush=True))
    print(format_table(result))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {json_path}")
    return result
