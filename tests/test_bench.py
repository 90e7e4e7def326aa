"""`fastcredit bench` and the step builders it shares with benchmarks/: they run every method
on tiny shapes, train what they claim to, and write well-formed JSON. No timing asserts."""

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from fastcredit.app import bench

QUICK = {w.name: w for w in bench.QUICK_WORKLOADS}


@pytest.mark.parametrize("workload", list(QUICK))
@pytest.mark.parametrize("method", bench.METHODS)
def test_every_step_gives_every_weight_a_finite_gradient(workload, method):
    workload = QUICK[workload]
    if not bench.supports(workload, method):
        pytest.skip("spatially shared DFA feedback needs feature maps")
    model = bench.build_network(workload, method)
    x, y = bench.batch_of(workload)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    assert weights
    for p in weights:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_spatial_dfa_shares_feedback_over_positions_and_projects_less():
    from fastcredit.nn import DFAPoint

    workload = QUICK["convnet-quick"]
    model = bench.build_network(workload, "dfa-spatial")
    spatial = {m.spatial for m in model.modules() if isinstance(m, DFAPoint)}
    assert spatial == {"shared"}
    flops = {m: bench.step_costs(bench.make_step(workload, m))[0]
             for m in ("dfa", "dfa-spatial")}
    assert flops["dfa-spatial"] < flops["dfa"]  # one projection per channel, not per entry
    with pytest.raises(ValueError, match="no mlp network"):
        bench.build_network(QUICK["mlp-quick"], "dfa-spatial")


def test_cli_quick_run_prints_ratios_and_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "fastcredit", "bench", "--quick", "--workloads", "mlp-quick",
         "--methods", "fa", "dfa", "--threads", "1", "--json", str(path)],
        check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert all(column in result.stdout
               for column in ("/ our bp", "GEMM %", "FLOP floor", "mem floor ms", "us/layer"))
    report = json.loads(path.read_text())
    assert report["machine"]["threads"] == 1
    assert report["machine"]["torch"]
    rows = {r["method"]: r for r in report["rows"]}
    assert set(rows) == {"fa", "dfa"}
    for row in rows.values():
        assert row["workload"] == "mlp-quick"
        assert row["ms"] > 0 and math.isfinite(row["vs_bp"]) and row["vs_bp"] > 0
        assert 0 < row["gemm_fraction"] <= 1
        assert row["flop_floor"] > 0 and row["memory_floor_ms"] >= 0
    assert report["machine"]["copy_bandwidth_gbs"] > 0


def test_cli_rejects_unknown_method():
    result = subprocess.run([sys.executable, "-m", "fastcredit", "bench", "--methods", "sgd"],
                            check=False, capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice: 'sgd'" in result.stderr and len(result.stderr.splitlines()) == 1


def test_step_costs_count_each_methods_gemms_and_elementwise_bytes():
    """The floors are exact counts: backprop's step is the forward GEMMs, every weight
    gradient and every input gradient but the first layer's; DFA skips the input gradients
    and adds one [N, C] x [C, d] projection per point; uSF reads W and writes B for every
    layer whose input needs a gradient."""
    workload = QUICK["mlp-quick"]  # 64-48-48-48-10, batch 16
    n, widths = workload.batch, workload.widths
    products = [a * b for a, b in zip(widths, widths[1:])]
    forward = 2 * n * sum(products)
    bp = forward + forward + 2 * n * sum(products[1:])
    dfa = forward + forward + 3 * 2 * n * widths[-1] * 48
    costs = {m: bench.step_costs(bench.make_step(workload, m)) for m in ("bp", "dfa", "usf")}
    assert costs["bp"] == (bp, 0)
    assert costs["dfa"][0] == dfa
    assert costs["usf"] == (bp, sum(2 * 4 * p for p in products[1:]))
    assert bench.weight_layers(workload) == 4
