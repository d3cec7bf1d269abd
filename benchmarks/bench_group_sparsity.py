"""Deploy time of a ShiftWiseConv2d as its group sparsity rises (pruned pieces removed).

One SW-T stage-1 operator (C=80, K=51, k=3, 56x56 by default). Its small-conv pieces are
magnitude-pruned by group (summed ``|w|`` over the ``k x k`` filter and both paths, the
lowest fraction ``s`` zeroed), then :meth:`ShiftWiseConv2d.inference_module` deploys it, which
removes the pruned pieces (``weight`` keeps the active ones, ``active_index`` says which).
All variants but the last run the piece form (``strategy="fused"``: small convs of the active
pieces, then the shift-add op), timed side by side in one run, interleaved repeat by repeat,
median of the repeats:

- ``dense``: the unpruned operator, deployed (all pieces);
- ``compact s``: the pruned operator, deployed, for each sparsity ``s``;
- ``strips``: for reference, the unpruned operator with ``strategy="strips"`` (three strip
  convolutions, ``auto``'s default on CPU), whose cost does not depend on group sparsity.

Run: ``python benchmarks/bench_group_sparsity.py`` (``--help`` for the shape). Prints the
table and writes ``benchmarks/results/group_sparsity.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from shiftwise.layers import ShiftWiseConv2d

RESULTS = Path(__file__).parent / "results"


def build_operator(args: argparse.Namespace) -> ShiftWiseConv2d:
    """An eval-mode SW operator with random weights and BN statistics."""
    torch.manual_seed(0)
    op = ShiftWiseConv2d(args.channels, args.kernel, args.small).eval()
    with torch.no_grad():
        for bn in (op.bn_h, op.bn_v, op.bn_identity):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(-1, 1)
            bn.bias.uniform_(-1, 1)
    return op


def prune_groups(op: ShiftWiseConv2d, sparsity: float) -> ShiftWiseConv2d:
    """A copy of ``op`` with the ``sparsity`` fraction of smallest pieces zeroed in all paths."""
    pruned = copy.deepcopy(op)
    with torch.no_grad():
        score = torch.stack([p.weight.abs() for p in pruned.paths]).sum((0, 2, 3, 4))
        drop = torch.topk(score, round(sparsity * score.numel()), largest=False).indices
        for path in pruned.paths:
            path.weight[drop] = 0.0
    return pruned


def max_error(module: torch.nn.Module, x: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest absolute difference between ``module(x)`` and ``expected``."""
    return float((module(x) - expected).abs().max())


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None]
) -> dict[str, list[float]]:
    """Seconds per call of every function, one call each per repeat (after one warm-up)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for repeat in range(repeats + 1):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if repeat:
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=80)
    parser.add_argument("--kernel", type=int, default=51)
    parser.add_argument("--small", type=int, default=3)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.3, 0.6, 0.8])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: steadier)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    op = build_operator(args)
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    variants: dict[str, torch.nn.Module] = {}
    errors: dict[str, float] = {}
    with torch.inference_mode():
        variants["dense"] = op.inference_module("pieces")
        for sparsity in args.sparsities:
            pruned = prune_groups(op, sparsity)
            expected = pruned(x)
            pruned = pruned.inference_module("pieces")
            variants[f"compact {sparsity:.0%}"] = pruned
            errors[f"compact {sparsity:.0%}"] = max_error(pruned, x, expected)
        strips = op.inference_module("strips")
        variants["strips"] = strips
        errors["strips"] = max_error(strips, x, variants["dense"](x))
        x = x.to(device)
        modules = {name: module.to(device) for name, module in variants.items()}
        fns = {name: (lambda m=m: m(x)) for name, m in modules.items()}
        times = time_interleaved(fns, args.repeats, sync)

    median = {name: statistics.median(t) for name, t in times.items()}
    rows = []
    for name, module in variants.items():
        active, total = module.piece_counts()
        rows.append(
            {
                "variant": name,
                "group_sparsity": 1.0 - active / total,
                "active_pieces": active,
                "total_pieces": total,
                "median_ms": 1e3 * median[name],
                "ratio_vs_dense": median[name] / median["dense"],
                "max_abs_error": errors.get(name, 0.0),
                "times_ms": [1e3 * t for t in times[name]],
            }
        )
    header = f"{'variant':<12} {'pieces':>10} {'median ms':>10} {'vs dense':>9}"
    print(f"{header}  max err")
    for row in rows:
        print(
            f"{row['variant']:<12} {row['active_pieces']:>5}/{row['total_pieces']:<4} "
            f"{row['median_ms']:>10.1f} {row['ratio_vs_dense']:>9.3f} "
            f"{row['max_abs_error']:.1e}"
        )
    RESULTS.mkdir(exist_ok=True)
    setup = vars(args) | {
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    (RESULTS / "group_sparsity.json").write_text(
        json.dumps({"setup": setup, "rows": rows}, indent=2)
    )
    plot(rows, setup, RESULTS / "group_sparsity.png")


def plot(rows: list[dict], setup: dict, path: Path) -> None:
    """Bar chart of the median deploy time per variant, ratios vs dense written on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    names = [row["variant"] for row in rows]
    values = [row["median_ms"] for row in rows]
    colors = ["#888888"] + ["#3b75af"] * (len(rows) - 2) + ["#d08c2f"]
    bars = ax.bar(names, values, color=colors)
    for bar, row in zip(bars, rows, strict=True):
        ax.annotate(
            f"{row['ratio_vs_dense']:.2f}x",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
        )
    ax.set_ylabel("deploy forward, median ms")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title(
        f"SW deploy vs group sparsity: C={setup['channels']}, K={setup['kernel']}, "
        f"k={setup['small']}, {setup['size']}x{setup['size']}, batch {setup['batch']}, "
        f"{setup['device_name']}",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
