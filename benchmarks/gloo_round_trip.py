"""Round trip of one tensor between 2 gloo ranks on loopback, sent as one message or as a
10-integer shape header plus the data (the DFA pipeline's messages): what a second blocking
receive costs on this machine. Quoted in benchmarks/NOTES.md ("Model-parallel DFA").

Run: python benchmarks/gloo_round_trip.py [--trips 200]
"""

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank: int, store: str, trips: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    data, header = torch.randn(32, 1024), torch.zeros(10, dtype=torch.int64)
    peer = 1 - rank
    medians = {"one message": [], "header + data": []}
    for _ in range(2):  # alternate, so that a change of load hits both
        for kind, parts in (("one message", [data]), ("header + data", [header, data])):
            times = []
            for _ in range(trips):
                start = time.perf_counter()
                for turn in (0, 1):
                    for part in parts:
                        (dist.send if turn == rank else dist.recv)(part, peer)
                times.append(time.perf_counter() - start)
            medians[kind].append(1e3 * statistics.median(times))
    if rank == 0:
        print(f"load average {os.getloadavg()[0]:.1f}; round trip of a 32x1024 float32 "
              "tensor, median ms (two alternating passes):")
        for kind, values in medians.items():
            print(f"  {kind:14} " + "  ".join(f"{v:.2f}" for v in values))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--trips", type=int, default=200, help="round trips per pass")
    args = parser.parse_args()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(os.path.join(tmp, "store"), args.trips), nprocs=2, join=True)


if __name__ == "__main__":
    main()
