"""DistributedDataParallel: two processes on the gloo backend (loopback) train FA, DFA and LRA
conversions; both ranks end identical and match one process trained on the whole batch.

The ranks must agree bit for bit (same model, same all-reduced gradients). Against the single
process the match is within float64 rounding, not exact: DDP averages the two ranks' mean
gradients, the single process takes one mean over the concatenated batch, and the two sums
round in a different order.
"""

import os
import subprocess
import sys
from pathlib import Path

import ddp_worker
import torch

import fastcredit

WORLD_SIZE = 2
TIMEOUT_S = 90  # two interpreters importing torch on a loaded 2-core machine: ~10-20 s


def test_two_gloo_ranks_stay_identical_and_match_one_process_on_the_whole_batch(tmp_path):
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(fastcredit.__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    worker = Path(ddp_worker.__file__)
    init_file = tmp_path / "rendezvous"  # a file store: no TCP port to pick for rendezvous
    ranks = [subprocess.Popen([sys.executable, str(worker), str(rank), str(WORLD_SIZE),
                               str(init_file), str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(WORLD_SIZE)]
    try:
        outputs = [process.communicate(timeout=TIMEOUT_S)[0] for process in ranks]
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()
    for rank, (process, output) in enumerate(zip(ranks, outputs)):
        assert process.returncode == 0, f"rank {rank} failed:\n{output}"

    for case in ddp_worker.CASES:
        states = [torch.load(tmp_path / f"{case}_rank{rank}.pt") for rank in range(WORLD_SIZE)]
        single = ddp_worker.build(case)
        initial = {k: v.clone() for k, v in single.state_dict().items()}
        ddp_worker.train(single)
        want = single.state_dict()
        assert states[0].keys() == want.keys()
        for key, value in want.items():
            assert torch.equal(states[0][key], states[1][key]), (case, key)
            torch.testing.assert_close(states[0][key], value, rtol=1e-12, atol=1e-14)
        assert any(not torch.equal(initial[k], want[k]) for k in want)  # it did train
