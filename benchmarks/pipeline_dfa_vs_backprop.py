"""Step time of the model-parallel DFA pipeline (fastcredit.distributed) against backprop
pipelines from torch.distributed.pipelining (GPipe and 1F1B), on the same model, split and
micro-batches: 2 gloo ranks on loopback, 1 thread each. Not a test; the numbers are quoted in
benchmarks/NOTES.md ("Model-parallel DFA").

Each step starts after a barrier. Per rank and step: wall time (perf_counter) and the main
thread's CPU time (thread_time); idle = wall - CPU, the time the stage waited for messages
(on a loaded machine it also holds the time the thread was descheduled). The schedules run in
interleaved rounds so that a change of load hits all of them alike; the table gives medians.

Run: python benchmarks/pipeline_dfa_vs_backprop.py [--steps 6] [--rounds 6] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

import fastcredit
from fastcredit.distributed import DFAPipeline, split_by_blocks

WIDTH, DEPTH, CLASSES, BATCH, MICRO_BATCHES, STAGES = 1024, 5, 10, 256, 8, 2
SCHEDULES = ("dfa", "dfa_static", "gpipe", "1f1b")  # dfa_static: static_shapes=True


def network() -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Linear(784, WIDTH), nn.Tanh()]
    for _ in range(DEPTH - 1):
        layers += [nn.Linear(WIDTH, WIDTH), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(WIDTH, CLASSES))


def stage_of(schedule: str, rank: int):
    """This rank's stepping function for ``schedule``: step(x, y)."""
    dfa_model = fastcredit.convert(network(), "dfa", seed=1)
    dfa_stage = split_by_blocks(dfa_model, STAGES)[rank]
    if schedule.startswith("dfa"):
        optimizer = torch.optim.SGD(dfa_stage.parameters(), lr=0.01)
        pipe = DFAPipeline(dfa_stage, loss_fn=F.cross_entropy, optimizer=optimizer,
                           static_shapes=schedule == "dfa_static")
        return lambda x, y: pipe.step(x, y, micro_batches=MICRO_BATCHES)
    # The same layers, the same cut, trained by backprop.
    plain = network()
    names = list(dfa_stage._modules)
    module = nn.Sequential(*(plain.get_submodule(n) for n in names))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01)
    stage = PipelineStage(module, rank, STAGES, torch.device("cpu"))
    kind = ScheduleGPipe if schedule == "gpipe" else Schedule1F1B
    engine = kind(stage, n_microbatches=MICRO_BATCHES, loss_fn=F.cross_entropy)

    def step(x, y):
        optimizer.zero_grad()
        if rank == 0:
            engine.step(x)
        else:
            engine.step(target=y, losses=[])
        optimizer.step()
    return step


def worker(rank: int, init_file: str, steps: int, rounds: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=STAGES, timeout=timedelta(seconds=300))
    steppers = {s: stage_of(s, rank) for s in SCHEDULES}
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 784, generator=generator)
    y = torch.randint(0, CLASSES, (BATCH,), generator=generator)
    timings = {s: [] for s in SCHEDULES}
    for s in SCHEDULES:  # warm-up (pipelining infers shapes in its first step)
        steppers[s](x, y)
    for _ in range(rounds):
        for s in SCHEDULES:
            for _ in range(steps):
                dist.barrier()
                wall, cpu = time.perf_counter(), time.thread_time()
                steppers[s](x, y)
                timings[s].append((time.perf_counter() - wall, time.thread_time() - cpu))
    everything = [None] * STAGES
    dist.all_gather_object(everything, timings)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(everything, f)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="steps per schedule per round")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds")
    parser.add_argument("--json", help="write the summary here")
    args = parser.parse_args()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "timings.json")
        mp.spawn(worker, args=(os.path.join(tmp, "store"), args.steps, args.rounds, out),
                 nprocs=STAGES, join=True)
        with open(out) as f:
            per_rank = json.load(f)
    summary = {"config": {"width": WIDTH, "depth": DEPTH, "batch": BATCH,
                          "micro_batches": MICRO_BATCHES, "stages": STAGES, "threads": 1,
                          "steps": args.steps, "rounds": args.rounds,
                          "load_average": os.getloadavg()},
               "schedules": {}}
    print(f"MLP 784-{WIDTH}x{DEPTH}-{CLASSES}, batch {BATCH} in {MICRO_BATCHES} micro-batches, "
          f"{STAGES} stages x 1 thread, load average {os.getloadavg()[0]:.1f}")
    print(f"{'schedule':10} {'step ms':>8} " + " ".join(
        f"{'busy' + str(r) + ' ms':>9} {'idle' + str(r) + ' ms':>9}" for r in range(STAGES)))
    for s in SCHEDULES:
        # a step takes as long as its slowest rank
        steps = [max(rank[s][k][0] for rank in per_rank) for k in range(len(per_rank[0][s]))]
        row = {"step_ms": 1e3 * statistics.median(steps)}
        for r, rank in enumerate(per_rank):
            row[f"busy{r}_ms"] = 1e3 * statistics.median(c for _, c in rank[s])
            row[f"idle{r}_ms"] = 1e3 * statistics.median(w - c for w, c in rank[s])
        summary["schedules"][s] = row
        print(f"{s:10} {row['step_ms']:8.1f} " + " ".join(
            f"{row[f'busy{r}_ms']:9.1f} {row[f'idle{r}_ms']:9.1f}" for r in range(STAGES)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
