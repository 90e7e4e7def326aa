"""One rank of the DDP test (tests/test_ddp.py): trains FA, DFA and LRA conversions for a few
steps under DistributedDataParallel on the gloo backend and saves each model's state.

Usage: python ddp_worker.py RANK WORLD_SIZE INIT_FILE OUT_DIR
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import fastcredit

CASES = ("fa", "dfa", "lra")
STEPS = 3
BATCH = 12  # the global batch; each of the ranks takes an equal slice


def build(case: str) -> nn.Module:
    """The same float64 model on every rank: torch's generator fixes weights and feedback."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh(),
                        nn.Linear(8, 4)).double()
    options = {"gamma": 0.5} if case == "lra" else {}
    return fastcredit.convert(mlp, case, **options)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    x = torch.randn(BATCH, 2, 5, dtype=torch.float64, generator=generator)
    return x, torch.randint(0, 4, (BATCH,), generator=generator)


def train(model: nn.Module, rank: int = 0, world_size: int = 1) -> None:
    """STEPS steps of SGD with momentum; rank r uses slice r of every global batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    share = BATCH // world_size
    for step in range(STEPS):
        x, y = batch(step)
        x, y = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def main(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    try:
        for case in CASES:
            model = build(case)
            train(DistributedDataParallel(model), rank, world_size)
            torch.save(model.state_dict(), Path(out_dir) / f"{case}_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
