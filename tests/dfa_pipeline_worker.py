"""One rank of the model-parallel DFA test (tests/test_distributed.py).

One process group of 4 ranks serves every check (starting interpreters is the cost): first
ranks {0, 1} and {2, 3} each run a 2-stage pipeline in their own subgroup, at the same time,
then all 4 run a 4-stage one. For every case and pipeline a rank trains its stage of the split
model with ``DFAPipeline`` and saves: the
gradients of one step without an optimizer, the stage's weights after STEPS optimizer steps,
and the weights after RESUMED more steps, once straight on and once from a checkpoint loaded
into a freshly built (differently initialised) model. Then, with FAIL set, the last rank raises
inside its loss in the middle of a step and every rank records what it saw; before that, in a
pair group of its own, rank 1 stalls for HANG_S in its loss and rank 0 must give up after its
SHORT_TIMEOUT_S.

Usage: python dfa_pipeline_worker.py RANK WORLD_SIZE INIT_FILE OUT_DIR  (WORLD_SIZE even)
"""

import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import fastcredit
from fastcredit.distributed import DFAPipeline, StageFailure, split_by_blocks

BATCH, MICRO_BATCHES, STEPS, RESUMED = 13, 3, 2, 2  # micro-batches of 5, 4 and 4 rows
TIMEOUT_S = 20  # the per-message limit: a lost peer is normally seen at once (socket closed)
HANG_S, SHORT_TIMEOUT_S = 2.5, 1.0  # a peer alive but stalled is seen only at the timeout
CASES = {
    # default seeded feedback, launay2019 normalisation; "sign" needs the output sent too
    "mlp": {},
    "mlp_sign_stored": {"signal": "sign", "feedback": "stored"},
    # one shared matrix normalised by D_max: needs every stage's widths (the geometry)
    "conv": {"preset": "tinydfa"},
    # shapes sent in the first step only (kept per micro-batch: they differ)
    "mlp_static": {},
}
PIPELINE_OPTIONS = {"mlp_static": {"static_shapes": True}}
BY_HAND = "by_hand"  # DFALinear blocks and a DFAOutput built by hand, cut by hand (2 stages)


def stages_of(case: str, world: int, init_seed: int = 0) -> list[nn.Sequential]:
    model = build(case, init_seed)
    return [model[:2], model[2:]] if case == BY_HAND else split_by_blocks(model, world)


def build(case: str, init_seed: int = 0) -> nn.Module:
    """The float64 model every rank builds in full; convert's seed fixes the feedback."""
    torch.manual_seed(init_seed)
    if case == BY_HAND:
        hidden = [fastcredit.nn.DFALinear(10, 16, "tanh"), fastcredit.nn.DFALinear(16, 12, "relu")]
        output = fastcredit.nn.DFAOutput(hidden, 4, seed=17 + init_seed)
        return nn.Sequential(*hidden, nn.Linear(12, 4), output).double()
    if case.startswith("mlp"):
        net = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 12), nn.Tanh(),
                            nn.Linear(12, 9), nn.Tanh(), nn.Linear(9, 4))
    else:
        net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
                            nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(),
                            nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(4 * 3 * 3, 4))
    return fastcredit.convert(net.double(), "dfa", seed=17 + init_seed, **CASES[case])


def batch(case: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    shape = (BATCH, 2, 6, 6) if case == "conv" else (BATCH, 10)
    x = torch.randn(shape, dtype=torch.float64, generator=generator)
    return x, torch.randint(0, 4, (BATCH,), generator=generator)


def optimizer(parameters):
    return torch.optim.SGD(parameters, lr=0.2, momentum=0.9)


SENT = [0]  # messages (isend calls) this rank posted


def _counted(isend):
    def counting(*args, **kwargs):
        SENT[0] += 1
        return isend(*args, **kwargs)
    return counting


dist.isend = _counted(dist.isend)


def run(pipe: DFAPipeline, case: str, steps: range) -> list[int]:
    """Train ``steps``; returns the number of messages this rank sent in each."""
    sent = []
    for step in steps:
        x, y = batch(case, step)
        before = SENT[0]
        pipe.step(x if pipe.index == 0 else None, y if pipe.is_last else None,
                  micro_batches=MICRO_BATCHES)
        sent.append(SENT[0] - before)
    return sent


def weights(stage: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in stage.state_dict().items()}


def check_case(case: str, group, out_dir: Path) -> dict:
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    stage = stages_of(case, world)[rank]
    loss = F.cross_entropy
    options = {"loss_fn": loss, "group": group, "timeout": TIMEOUT_S,
               **PIPELINE_OPTIONS.get(case, {})}
    run(DFAPipeline(stage, **options), case, range(1))
    grads = {k: p.grad.clone() for k, p in stage.named_parameters()}
    stage.zero_grad(set_to_none=True)
    pipe = DFAPipeline(stage, optimizer=optimizer(stage.parameters()), **options)
    messages = run(pipe, case, range(STEPS))
    trained = weights(stage)
    checkpoint = out_dir / f"{case}_{world}stages_rank{dist.get_rank()}.pt"
    torch.save(pipe.state_dict(), checkpoint)
    run(pipe, case, range(STEPS, STEPS + RESUMED))
    straight_on = weights(stage)
    # Resume into a model built from other weights and another feedback seed.
    fresh = stages_of(case, world, init_seed=1)[rank]
    resumed = DFAPipeline(fresh, optimizer=optimizer(fresh.parameters()), **options)
    resumed.load_state_dict(torch.load(checkpoint))
    run(resumed, case, range(STEPS, STEPS + RESUMED))
    return {"grads": grads, "trained": trained, "straight_on": straight_on,
            "resumed": weights(fresh), "messages": messages}


def fail_mid_step(rank: int, world: int) -> str:
    """The last rank raises in its second micro-batch's loss; the others must not hang."""
    stage = split_by_blocks(build("mlp"), world)[rank]
    calls = []

    def loss(output, target):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected failure in the last stage's loss")
        return F.cross_entropy(output, target)

    return one_failing_step(DFAPipeline(stage, loss_fn=loss, timeout=TIMEOUT_S))


def one_failing_step(pipe: DFAPipeline) -> str:
    """Run one step; what this rank saw: StageFailure and when, or no error."""
    start = time.monotonic()
    try:
        run(pipe, "mlp", range(1))
    except StageFailure as err:
        return f"StageFailure after {time.monotonic() - start:.1f} s: {err}"
    return "no error"


def stall_mid_step(rank: int, group) -> str:
    """In ``group`` (ranks 0 and 1), rank 1 stalls in its first loss; rank 0 must time out."""
    if rank > 1:
        return "not in the pair"
    stage = split_by_blocks(build("mlp"), 2)[rank]

    def loss(output, target):
        time.sleep(HANG_S)
        return F.cross_entropy(output, target)

    return one_failing_step(DFAPipeline(stage, loss_fn=loss, group=group,
                                        timeout=SHORT_TIMEOUT_S))


def main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    pairs = [dist.new_group([r, r + 1]) for r in range(0, world, 2)]
    stall_group = dist.new_group([0, 1])
    out = Path(out_dir)
    results = {2: {case: check_case(case, pairs[rank // 2], out) for case in [*CASES, BY_HAND]},
               world: {case: check_case(case, None, out) for case in CASES}}
    torch.save(results, out / f"rank{rank}.pt")
    (out / f"stall{rank}.txt").write_text(stall_mid_step(rank, stall_group))
    (out / f"failure{rank}.txt").write_text(fail_mid_step(rank, world))


if __name__ == "__main__":
    try:
        main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
    except BaseException:
        Path(sys.argv[4], f"failure{sys.argv[1]}.txt").write_text(traceback.format_exc())
        raise
