"""Options and the ratio summary shared by the benchmark files.

``--quick`` swaps every shape for a tiny one, so CI can check that each benchmark runs
(combine it with pytest's default ``--benchmark-disable``: one call per benchmark).
After a timed run (``--benchmark-enable``) a table of median ratios against each group's
baseline (plain backprop for training steps, the reference composition for ops) is printed.
pytest-benchmark runs the rows one after another, not interleaved: under a varying load prefer
``fastcredit bench``, which interleaves rounds in one process.
"""

from __future__ import annotations

import pytest

from fastcredit.app import bench

_medians: dict[str, dict[str, float]] = {}  # group -> row name -> median seconds
_baselines: dict[str, str] = {}


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true",
                     help="tiny shapes: check that every benchmark runs (CI)")


@pytest.fixture(scope="session")
def quick(request) -> bool:
    return request.config.getoption("--quick")


def pytest_generate_tests(metafunc):
    if "workload" in metafunc.fixturenames:
        chosen = bench.QUICK_WORKLOADS if metafunc.config.getoption("--quick") else bench.WORKLOADS
        metafunc.parametrize("workload", chosen, ids=[w.name for w in chosen])


@pytest.fixture
def measure(benchmark):
    """``measure(group, name, fn, baseline=...)``: benchmark ``fn`` and remember its median
    for the ratio table; the row called ``baseline`` is the group's denominator."""

    def run(group: str, name: str, fn, *, baseline: str):
        benchmark.group = group
        benchmark.name = name
        benchmark(fn)
        _baselines[group] = baseline
        if benchmark.stats is not None:  # None under --benchmark-disable
            _medians.setdefault(group, {})[name] = benchmark.stats.stats.median

    return run


def pytest_terminal_summary(terminalreporter):
    if not _medians:
        return
    terminalreporter.section("median time / group baseline")
    for group, rows in _medians.items():
        base = rows.get(_baselines[group])
        for name, median in rows.items():
            ratio = f"{median / base:.3f}" if base else "n/a (baseline not run)"
            terminalreporter.write_line(f"{group:<28} {name:<28} {ratio}")
