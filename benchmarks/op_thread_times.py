"""Per-op CPU cost in thread CPU time (fastest of 10 calls, 1 thread): the numbers quoted in
benchmarks/NOTES.md. Thread CPU time is less disturbed than wall time by other processes on
a shared machine. Run: python benchmarks/op_thread_times.py (with and without your change).
"""

import time

import torch

import fastcredit


def best_seconds(fn, calls: int = 10) -> float:
    fn()
    best = float("inf")
    for _ in range(calls):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out, w = torch.empty(1024, 1024), torch.randn(1024, 1024)
    per_entry = {
        "feedback_fill_ uniform 1024x1024": lambda: fastcredit.feedback_fill_(out, 1),
        "feedback_fill_ normal 1024x1024": lambda: fastcredit.feedback_fill_(out, 1,
                                                                             dist="normal"),
        "sign_feedback seeded_step (brSF)": lambda: fastcredit.sign_feedback(
            w, "seeded_step", seed=3, step=4),
        "sign_feedback scalar (uSF)": lambda: fastcredit.sign_feedback(w, "scalar", scale=0.1),
        "sign_feedback stored (frSF)": lambda: fastcredit.sign_feedback(w, "stored", magnitude=w),
        "torch.sign(w) * 0.1": lambda: torch.sign(w) * 0.1,
    }
    for name, fn in per_entry.items():
        print(f"{name:<36} {best_seconds(fn) / w.numel() * 1e9:6.2f} ns/entry")
    a, d = torch.randn(128, 1024), torch.randn(128, 1024)
    print(f"{'lra_error tanh 128x1024':<36} "
          f"{best_seconds(lambda: fastcredit.lra_error(a, d, 0.1, 'tanh')) / a.numel() * 1e9:6.2f}"
          " ns/entry")
    print(f"{'torch.tanh 128x1024':<36} "
          f"{best_seconds(lambda: torch.tanh(a)) / a.numel() * 1e9:6.2f} ns/entry")
    e = torch.randn(128, 10)
    stored = fastcredit.feedback_matrix(1, 10, 1024, dist="normal")
    seconds = best_seconds(lambda: fastcredit.seeded_project(e, 1, 1024, dist="normal"))
    print(f"{'seeded_project 128x10 -> 1024 normal':<36} {seconds * 1e6:6.1f} us")
    print(f"{'stored matmul 128x10 @ 10x1024':<36} "
          f"{best_seconds(lambda: e @ stored) * 1e6:6.1f} us")


if __name__ == "__main__":
    main()
