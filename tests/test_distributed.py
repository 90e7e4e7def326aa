"""Model-parallel DFA (fastcredit.distributed): 2 and 4 gloo ranks on loopback, one stage each.

One job runs tests/dfa_pipeline_worker.py once per rank (one 4-rank process group shared by
every check: two 2-stage pipelines in subgroups, then a 4-stage one), and the checks here
compare what the ranks saved against single-process DFA on the whole model with the same
micro-batches: the gradients of one step and the weights after a few SGD steps, in float64,
for converted models split by split_by_blocks (also with static_shapes, which must halve
the messages after the first step) and for a model built and cut by hand; a
checkpoint resumed into a freshly built model continues bit for bit; when the last rank
raises mid-step, every other rank stops with StageFailure instead of waiting for its error
signal, and a rank that stalls makes its peer fail at its timeout. The match with one
process is to float64 rounding, not bitwise: a stage's shared-feedback projection may be
computed over fewer columns.
"""

import os
import subprocess
import sys
from pathlib import Path

import dfa_pipeline_worker as worker
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastcredit
from fastcredit.distributed import DFAPipeline, split_by_blocks

JOB_TIMEOUT_S = 120  # interpreters importing torch on a loaded 2-core machine


def run_job(world: int, out: Path) -> list[str]:
    """Run every rank to completion (or kill it); returns each rank's captured output."""
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(fastcredit.__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    init_file = out / "rendezvous"  # a file store: no TCP port to pick
    ranks = [subprocess.Popen([sys.executable, worker.__file__, str(rank), str(world),
                               str(init_file), str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(world)]
    try:
        return [process.communicate(timeout=JOB_TIMEOUT_S)[0] for process in ranks]
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()


WORLD = 4
# the ranks of each pipeline, by number of stages
PIPELINES = {2: [[0, 1], [2, 3]], 4: [[0, 1, 2, 3]]}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipelines")
    logs = run_job(WORLD, out)
    results = []
    for rank in range(WORLD):
        path = out / f"rank{rank}.pt"
        assert path.exists(), f"rank {rank} saved nothing:\n{logs[rank]}"
        results.append(torch.load(path))
    failures = [(out / f"failure{rank}.txt").read_text() for rank in range(WORLD)]
    stalls = [(out / f"stall{rank}.txt").read_text() for rank in range(2)]
    return results, failures, stalls


def single_process(case: str):
    """The whole model in one process: one step's gradients, then the weights after STEPS
    and after STEPS + RESUMED optimizer steps (one backward per micro-batch of loss / M)."""
    model = worker.build(case)
    optimizer = None
    found = {}
    for step in range(1 + worker.STEPS + worker.RESUMED):
        if step == 1:  # the workers restart from the same initial weights with an optimizer
            grads = {k: p.grad.clone() for k, p in model.named_parameters()}
            model = worker.build(case)
            optimizer = worker.optimizer(model.parameters())
        if optimizer is not None:
            optimizer.zero_grad()
        x, y = worker.batch(case, step if step == 0 else step - 1)
        for xm, ym in zip(x.tensor_split(worker.MICRO_BATCHES),
                          y.tensor_split(worker.MICRO_BATCHES)):
            (F.cross_entropy(model(xm), ym) / worker.MICRO_BATCHES).backward()
        if optimizer is not None:
            optimizer.step()
        if step == worker.STEPS:
            found["trained"] = {k: v.clone() for k, v in model.state_dict().items()}
    found["grads"] = grads
    found["straight_on"] = {k: v.clone() for k, v in model.state_dict().items()}
    return found


def merged(results: list[dict], case: str, what: str) -> dict:
    whole = {}
    for result in results:
        assert not whole.keys() & result[case][what].keys()  # the stages are disjoint
        whole.update(result[case][what])
    return whole


@pytest.mark.parametrize("case,stages", [(case, stages) for case in worker.CASES
                                         for stages in sorted(PIPELINES)]
                         + [(worker.BY_HAND, 2)])
def test_pipeline_equals_single_process_dfa(job, case, stages):
    want = single_process(case)
    for ranks in PIPELINES[stages]:
        check_pipeline([job[0][r][stages] for r in ranks], case, want)


def check_pipeline(results: list[dict], case: str, want: dict) -> None:
    grads = merged(results, case, "grads")
    assert grads.keys() == want["grads"].keys()
    for key, value in want["grads"].items():
        assert value.abs().max() > 0, key  # every block, the first stage's included, learns
        torch.testing.assert_close(grads[key], value, rtol=1e-12, atol=1e-15, msg=key)
    for what in ("trained", "straight_on"):
        got = merged(results, case, what)
        # A last stage without points never makes the stored matrices: the stages do.
        assert got.keys() <= want[what].keys()
        assert all(".dfa_output.feedback_" in k for k in want[what].keys() - got.keys())
        for key, value in got.items():
            torch.testing.assert_close(value, want[what][key], rtol=1e-12, atol=1e-15, msg=key)
    # the stages really were split across the ranks
    assert all(result[case]["grads"] for result in results)


@pytest.mark.parametrize("case", [*worker.CASES, worker.BY_HAND])
def test_checkpoint_resumes_each_stage_bit_for_bit(job, case):
    for result in (r[stages] for r in job[0] for stages in PIPELINES if case in r[stages]):
        straight_on, resumed = result[case]["straight_on"], result[case]["resumed"]
        assert straight_on.keys() == resumed.keys()
        for key in straight_on:
            assert torch.equal(straight_on[key], resumed[key]), key
        assert any(not torch.equal(result[case]["trained"][k], straight_on[k])
                   for k in straight_on)  # the resumed steps did train


def test_a_rank_failing_mid_step_stops_every_rank_with_a_clear_error(job):
    failures = job[1]
    assert "injected failure in the last stage's loss" in failures[-1]
    for rank in range(WORLD - 1):
        assert failures[rank].startswith("StageFailure after"), failures[rank]
        assert f"stage {rank}: receiving the output error with stage {WORLD - 1}" in \
            failures[rank]
        seconds = float(failures[rank].split()[2])
        assert seconds < worker.TIMEOUT_S  # seen when the peer went away, not at a timeout


def test_static_shapes_send_headers_in_the_first_step_only(job):
    for result in (r[stages] for r in job[0] for stages in PIPELINES):
        headers, static = result["mlp"]["messages"], result["mlp_static"]["messages"]
        # every message is a header and its data; the first step also sends the geometry
        assert static[0] == headers[0] > headers[1] > 0
        assert 2 * static[1] == headers[1]


def test_a_stalled_rank_makes_its_peers_fail_at_their_timeout(job):
    stalled = job[2][0]
    assert stalled.startswith("StageFailure after"), stalled
    assert "stage 0: receiving the output error with stage 1" in stalled
    seconds = float(stalled.split()[2])
    assert worker.SHORT_TIMEOUT_S - 0.2 <= seconds < worker.HANG_S


def test_split_by_blocks_cuts_at_points_and_refuses_what_it_cannot_split():
    model = worker.build("conv")
    stages = split_by_blocks(model, 3)
    # 4 blocks in 3 stages: 1, 2 and 1 blocks
    assert [list(s._modules) for s in stages] == [["0", "1", "2"], ["3", "4", "5", "6"],
                                                  ["7", "8"]]
    assert sum(len(s.state_dict()) for s in stages) == len(model.state_dict())
    with pytest.raises(ValueError, match="4 DFA blocks .* fewer than num_stages=5"):
        split_by_blocks(model, 5)
    with pytest.raises(TypeError, match="needs an nn.Sequential"):
        split_by_blocks(nn.ModuleList([nn.Linear(2, 2)]), 1)
    with pytest.raises(ValueError, match="no DFAPoint"):
        split_by_blocks(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2)), 1)
    with pytest.raises(ValueError, match="at least 2 ranks"):
        single_rank_pipeline()


def single_rank_pipeline():
    import torch.distributed as dist
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        DFAPipeline(worker.build("mlp"), loss_fn=F.cross_entropy)
    finally:
        dist.destroy_process_group()
