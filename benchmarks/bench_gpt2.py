"""One training step of a converted GPT-2 against backprop's (issue #16's benchmark; not a test).

A GPT-2 LM built from a config (default: 4 layers, width 256, 4 heads, sequence 128), trained
on random tokens: forward with the language-model loss, backward, SGD step. The methods run
interleaved in rounds on copies with the same initial weights; each round keeps each method's
fastest step, and the median over rounds is reported with its ratio to backprop's, beside
the FLOP floor: the step's GEMM/attention/projection FLOPs over backprop's (counted by
``fastcredit bench``'s counter), the ratio the method would reach if FLOPs were all. Run:

    python benchmarks/bench_gpt2.py [--methods bp fa dfa] [--rounds 5] [--threads 1]
        [--vocab 8192] [--dfa-feedback shared] [--dfa-error-at head_input]

Needs transformers. Numbers depend on the machine and its load: say both where you quote them.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import transformers

import fastcredit
from fastcredit.app.bench import step_costs


def _step(model, optimizer, tokens) -> None:
    optimizer.zero_grad(set_to_none=True)
    model(input_ids=tokens, labels=tokens).loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["bp", "fa", "dfa"])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128, help="sequence length")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method per round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dfa-feedback", choices=["seeded", "stored", "shared"],
                        help="DFAOutput's feedback for dfa (default: convert's)")
    parser.add_argument("--dfa-error-at", choices=["output", "head_input"],
                        help="convert's error_at for dfa (default: convert's, the logits)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=args.heads,
                                     n_positions=args.tokens, vocab_size=args.vocab,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    plain = transformers.GPT2LMHeadModel(config).to(args.device)
    models = {}
    dfa_options = {k: v for k, v in (("feedback", args.dfa_feedback),
                                     ("error_at", args.dfa_error_at)) if v}
    for method in args.methods:
        # "bp" here is the plain model: no fastcredit layer at all
        options = {"seed": 0}
        if method == "dfa":
            options.update(dfa_options)
        model = copy.deepcopy(plain) if method == "bp" else fastcredit.convert(
            plain, method, copy=True, **options)
        models[method] = (model, torch.optim.SGD(model.parameters(), lr=1e-3))
    tokens = torch.randint(0, args.vocab, (args.batch, args.tokens), device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for model, optimizer in models.values():  # warm-up (lazy feedback state, allocator)
        _step(model, optimizer, tokens)
    times: dict[str, list[float]] = {m: [] for m in models}
    for _ in range(args.rounds):
        for method, (model, optimizer) in models.items():
            best = float("inf")
            for _ in range(args.steps):
                sync()
                start = time.perf_counter()
                _step(model, optimizer, tokens)
                sync()
                best = min(best, time.perf_counter() - start)
            times[method].append(best)
    print(f"GPT-2 {args.layers} layers, width {args.width}, {args.heads} heads, sequence "
          f"{args.tokens}, batch {args.batch}, vocabulary {args.vocab}; {args.device}, "
          f"{args.threads} thread(s); median over {args.rounds} rounds of each round's fastest "
          f"of {args.steps} steps; dfa options {dfa_options or 'convert defaults'}")
    base = statistics.median(times["bp"]) if "bp" in times else None
    flops = {m: step_costs(lambda m=m: _step(*models[m], tokens))[0] for m in models}
    for method, values in times.items():
        median = statistics.median(values)
        ratio = (f"  {median / base:.3f}x bp, FLOP floor {flops[method] / flops['bp']:.3f}"
                 if base else "")
        print(f"  {method:>4}: {1e3 * median:8.1f} ms/step (rounds: "
              f"{', '.join(f'{1e3 * v:.0f}' for v in values)}){ratio}")


if __name__ == "__main__":
    main()
