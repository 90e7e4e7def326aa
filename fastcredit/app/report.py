"""The plot and the table that compare the methods of one `fastcredit train` run."""

from __future__ import annotations

import math
from pathlib import Path

LINESTYLES = ("-", "--", ":", "-.")


def _smooth(values: list[float], window: int) -> list[float]:
    """Mean of the last ``window`` values at each point (fewer at the start)."""
    sums, total, out = [], 0.0, []
    for i, value in enumerate(values):
        total += value
        sums.append(total)
        first = i - window
        out.append((total - (sums[first] if first >= 0 else 0.0)) / min(i + 1, window))
    return out


def hidden_layers(result) -> list[str]:
    """Layers whose alignment says something: all but the output layer, which receives the
    true gradient under every method; none for backprop, exact everywhere."""
    return [] if result.config.method == "bp" else list(result.layers)[:-1]


def _epochs_text(result) -> str:
    steps = result.records[-1]["steps"]
    epochs = steps / result.batches_per_epoch
    whole = f"{epochs:.0f}" if epochs == int(epochs) else f"{epochs:.2f} (last partial)"
    return f"{steps} steps = {whole} epoch(s) of {result.batches_per_epoch}"


def plot(path: Path, results: dict) -> None:
    """``path``: three panels over training steps, every method in its own colour: the loss
    per step (faint) and its running mean (bold); test accuracy after each epoch with the
    smoothed training-batch accuracy; and the update alignment of every hidden layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    first = next(iter(results.values()))
    config = first.config
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    window = max(min(5, len(first.steps)), len(first.steps) // 20)
    shown = []  # accuracies after the first tenth of training: they set the y range
    for i, (method, result) in enumerate(results.items()):
        steps = [row["step"] for row in result.steps]
        axes[0].plot(steps, [row["loss"] for row in result.steps], color=f"C{i}", alpha=0.12,
                     lw=0.5)
    for i, (method, result) in enumerate(results.items()):
        color = f"C{i}"
        steps = [row["step"] for row in result.steps]
        axes[0].plot(steps, _smooth([row["loss"] for row in result.steps], window), color=color,
                     lw=1.8, label=method)
        accuracy = _smooth([row["accuracy"] for row in result.steps], window)
        axes[1].plot(steps, accuracy, color=color, lw=1, alpha=0.6)
        tests = [r["test_accuracy"] for r in result.records]
        axes[1].plot([r["steps"] for r in result.records], tests, color=color, marker="o",
                     lw=1.8, label=method)
        shown += tests + accuracy[len(accuracy) // 10:]
        measured = [row for row in result.steps if row["alignment"] is not None]
        for layer, style in zip(hidden_layers(result), LINESTYLES * 8):
            axes[2].plot([row["step"] for row in measured],
                         [row["alignment"][layer] for row in measured], color=color,
                         ls=style, lw=1.5)
    ends = [r["steps"] for r in first.records][:-1]
    for axis in axes:
        for end in ends:  # epoch boundaries
            axis.axvline(end, color="0.8", lw=0.8, zorder=0)
        axis.set_xlabel("training step (grey lines: epoch ends)")
        axis.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].set_title(f"training loss (bold: mean of the last {window} steps)")
    axes[0].legend(title="method")
    low = max(0.0, math.floor((min(shown) - 0.05) * 20) / 20)
    axes[1].set(title="accuracy (dots: test, after each epoch;\nthin: training batches, smoothed)",
                ylim=(low, min(1.0, max(shown) + 0.03) + 0.005))
    axes[1].legend(title="test", loc="best")  # the place that covers the fewest points
    layers = [layer for result in results.values() for layer in hidden_layers(result)]
    layers = list(dict.fromkeys(layers))
    if layers:
        axes[2].legend([Line2D([], [], color="0.3", ls=style) for style in LINESTYLES * 8][
                           :len(layers)],
                       [f"{layer} [{first.layers[layer]}]" for layer in layers],
                       title="layer [weight shape]", fontsize="small")
        values = [row["alignment"][layer] for r in results.values() for layer in hidden_layers(r)
                  for row in r.steps if row["alignment"]]
        low = min((v for v in values if math.isfinite(v)), default=0.0)
        axes[2].set_ylim(min(0.0, math.floor(low * 10) / 10), 1.02)
    else:
        axes[2].text(0.5, 0.5, "backprop only: every layer\nreceives its true gradient",
                     ha="center", va="center", transform=axes[2].transAxes)
    axes[2].set_title("update alignment with backprop (cosine), hidden layers\n"
                      "(output layer and backprop are 1 by construction)")
    figure.suptitle(
        f"fastcredit train: {' vs '.join(results)} - {config.model} on {first.dataset}, "
        f"{_epochs_text(first)}, batch {config.batch_size}, {config.optimizer} lr {config.lr}, "
        f"seed {config.seed}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def summary(results: dict, command: str = "") -> str:
    """A markdown table: per method, final and best test accuracy, final training loss, time
    per step (and relative to backprop when it ran) and the mean alignment of the hidden
    layers at the end."""
    first = next(iter(results.values()))
    config = first.config
    bp = results.get("bp")
    lines = [
        f"# fastcredit train: {', '.join(results)}", "",
        (f"{config.model} on {first.dataset} ({first.train_size} train / {first.test_size} "
         f"test, from {first.dataset_source}); {_epochs_text(first)}; batch "
         f"{config.batch_size}, {config.optimizer} lr {config.lr}, seed {config.seed}. Every "
         "method starts from the same initial weights and sees the batches in the same order."),
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    lines += [
        "",
        ("| method | final test acc % | best test acc % | final train loss | ms per step "
         "| time per step / backprop | mean alignment, hidden layers |"),
        "|---|---|---|---|---|---|---|",
    ]
    for method, result in results.items():
        last = result.records[-1]
        layers = hidden_layers(result)
        alignment = ("1 (exact)" if method == "bp" else
                     f"{sum(last['alignment'][k] for k in layers) / len(layers):.3f}"
                     if layers else "-")
        ratio = f"{result.seconds_per_step / bp.seconds_per_step:.2f}" if bp else "-"
        lines.append(
            f"| {method} | {_pct(last['test_accuracy'])} "
            f"| {_pct(max(r['test_accuracy'] for r in result.records))} "
            f"| {last['train_loss']:.4f} | {1000 * result.seconds_per_step:.2f} | {ratio} "
            f"| {alignment} |")
    lines += [
        "",
        ("Time per step: wall time of the training steps (alignment probes and test evaluation "
         "excluded), the methods run one after another in this process: a rough guide, not a "
         "benchmark (`fastcredit bench` interleaves rounds). Mean alignment: the cosine between "
         "the method's and backprop's weight gradient on 128 test images after the last step, "
         "averaged over the layers before the output layer (the output layer gets the true "
         "gradient under every method). Per-layer values: `<method>/metrics.csv`; per step: "
         "`<method>/steps.csv`."),
    ]
    return "\n".join(lines) + "\n"
